"""Development tools, apart from what runs in production: none of this is part of `campaign-fsm run`.

- `simulator/`: the platform simulator, a real HTTP + WebSocket server (`campaign-fsm simulate`);
- `brokers`: the bundled Kafka-protocol brokers (noida-db, tansu) that tests, the demo and the
  benches start and stop;
- `demo/`: the one-command demo (`campaign-fsm demo`), and `tui`, its live terminal view.
"""
