"""Entry points, run as `python -m train.<name>`: they glue data, nets and the engine."""
