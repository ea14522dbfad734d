"""What an operator runs by hand: detect, check-config, evaluate, collect, label, explain, bench, demo."""
