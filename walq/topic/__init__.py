"""SNS topics: the topics' catalog, subscriptions, publish and fan-out into queues.

Start with ``topic.py`` (the public handles), then ``fanout.py`` (how a
publish reaches every subscribed queue exactly once), ``catalog.py`` (which
topics and subscriptions exist) and docs/format.md ("Topics").
"""
