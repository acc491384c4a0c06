"""Every edge of campaign-fsm: platform REST client, notification channel, Kafka, the simulator, the CLI.

Adapters translate; they hold no business rule. Rules live in `fsm/`.
"""
