"""SQS-style queues on the durable log (see walq/broker.py for the entry point)."""
