"""walq's public surface is exactly ``walq.__all__`` (as httpx pins its own):
adding a name is a decision, and removing one breaks the callers API.md
promises it to."""

import inspect

import walq

EXPORTED = {
    "open",
    "Broker",
    "Queue",
    "Message",
    "SendResult",
    "BatchResult",
    "QueueStats",
    "QueueAttributes",
    "RedrivePolicy",
    "StoreClock",
    "repair",
    "RepairReport",
    "Worker",
    "RetryPolicy",
    "Notification",
    "pattern_matches",
    "Topic",
    "Subscription",
    "PublishResult",
    "Bus",
    "Rule",
    "Target",
    "InputTransformer",
    "BusDoesNotExist",
    "RuleDoesNotExist",
    "WalqError",
    "TopicDoesNotExist",
    "InvalidPattern",
    "QueueDoesNotExist",
    "QueueAlreadyExists",
    "InvalidParameter",
    "MessageTooLarge",
    "InvalidReceipt",
    "BatchError",
    "InvalidPattern",
    "MessageNotInflight",
    "CorruptionError",
    "BrokerClosed",
    "LogPoisoned",
    "StoreFull",
    "ReadOnlyStore",
    "UnsafeFile",
    "LockTimeout",
}


def test_all_lists_exactly_the_public_names():
    assert sorted(walq.__all__) == sorted(EXPORTED)
    assert len(walq.__all__) == len(set(walq.__all__))


def test_every_exported_name_exists_and_belongs_to_walq():
    for name in walq.__all__:
        obj = getattr(walq, name)
        assert obj.__module__.startswith("walq"), (name, obj.__module__)


def test_no_other_public_module_level_names():
    public = {n for n, v in vars(walq).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert public <= EXPORTED


def test_errors_form_one_tree_and_inherit_the_builtins_api_md_names():
    expected_bases = {
        "QueueDoesNotExist": LookupError,
        "InvalidParameter": ValueError,
        "MessageTooLarge": walq.InvalidParameter,
        "InvalidReceipt": walq.InvalidParameter,
        "BatchError": walq.InvalidParameter,
        "TopicDoesNotExist": LookupError,
        "InvalidPattern": walq.InvalidParameter,
        "LockTimeout": TimeoutError,
        "LogPoisoned": OSError,
        "StoreFull": OSError,
        "ReadOnlyStore": PermissionError,
        "UnsafeFile": PermissionError,
    }
    for name in walq.__all__:
        obj = getattr(walq, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, walq.WalqError), name
            if name in expected_bases:
                assert issubclass(obj, expected_bases[name]), name
    for name in ("QueueAlreadyExists", "MessageNotInflight", "CorruptionError", "BrokerClosed"):
        assert issubclass(getattr(walq, name), walq.WalqError)


def test_open_takes_the_documented_keywords():
    params = inspect.signature(walq.open).parameters
    assert list(params)[0] == "path"
    assert params["durability"].default == "always"
    assert params["sync_interval"].default == 0.01
    assert params["durability"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["region"].default == "us-east-1"
    assert params["account"].default == "000000000000"


def test_topic_methods_named_in_api_md_exist():
    for name in ("create_topic", "get_topic", "list_topics", "delete_topic"):
        assert hasattr(walq.Broker, name), name
    for name in ("subscribe", "subscriptions", "publish", "publish_batch", "arn"):
        assert hasattr(walq.Topic, name), name
    for name in ("unsubscribe", "set_attributes", "arn", "endpoint", "protocol"):
        assert hasattr(walq.Subscription, name), name
    defaults = {k: p.default for k, p in inspect.signature(walq.Topic.subscribe).parameters.items()}
    assert defaults["filter_policy"] is None and defaults["filter_scope"] == "attributes"
    assert defaults["raw"] is False and defaults["dead_letter"] is None and defaults["retry"] is None
    assert set(walq.PublishResult._fields) == {"message_id", "sequence"}


def test_queue_methods_named_in_api_md_exist():
    for name in ("send", "send_batch", "receive", "delete", "delete_batch", "change_visibility",
                 "change_visibility_batch", "purge", "stats", "set_attributes", "attributes"):
        assert hasattr(walq.Queue, name), name
    for name in ("create_queue", "get_queue", "list_queues", "delete_queue", "dead_letter_sources",
                 "move_messages", "close", "__enter__", "__exit__"):
        assert hasattr(walq.Broker, name), name
    defaults = {k: p.default for k, p in inspect.signature(walq.Broker.create_queue).parameters.items()}
    assert defaults["fifo"] is None
    assert defaults["visibility_timeout"] == 30
    assert defaults["retention"] == 345_600
    assert defaults["delay"] == 0
    assert defaults["max_message_size"] == 1_048_576
    assert defaults["receive_wait"] == 0
    assert defaults["dead_letter"] is None
    assert defaults["content_based_dedup"] is False
    assert defaults["dedup_scope"] == "queue"


def test_message_has_the_documented_fields():
    fields = set(inspect.signature(walq.Message).parameters)
    assert {"message_id", "body", "attributes", "receipt", "receive_count", "sent_at",
            "first_received_at", "group", "dedup_id", "sequence"} <= fields
    assert isinstance(walq.Message.text, property)
    assert callable(walq.Message.ack) and callable(walq.Message.change_visibility)
