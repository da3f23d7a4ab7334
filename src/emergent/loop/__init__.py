"""The continuous-training loop's parts: whether to retrain (`trigger`), one loop at a time
(`lock`), the challenger's DVC experiment (`experiment`) and the running service's reload
(`service`). `emergent.commands.loop` runs one iteration with them, the feedback export and the
promotion gate; nothing here imports the registry, the monitor or the service code."""
