"""The auction engine (pure Python), the strategy library, their Django configuration, live
evaluation tasks, execution (brokers, orders, risk) and backtests."""
