"""ride: the recurrent image density estimator (Theis & Bethge, 2015)."""

__version__ = "0.1.0.dev0"
