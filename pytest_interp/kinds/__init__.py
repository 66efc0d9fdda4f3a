"""kinds layer: the built-in expectation kinds, one module each (registered in
``pytest_interp.registry``)."""
