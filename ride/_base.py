"""A minimal scikit-learn-style estimator base, without depending on scikit-learn."""

import inspect
import time


class BaseEstimator:
    """``get_params``, ``set_params`` and ``repr`` from the constructor signature.

    Subclasses store every constructor argument unchanged under its own name
    and validate them in ``fit``.
    """

    @classmethod
    def _param_names(cls):
        signature = inspect.signature(cls.__init__)
        return [
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self, deep=True):
        """Hyperparameters as a dict (``deep`` is accepted for compatibility)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set hyperparameters; unknown names raise ``ValueError``.

        Returns
        -------
        self
        """
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; valid "
                    f"parameters are {valid}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = []
        for name in self._param_names():
            value = getattr(self, name)
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = value is default or value == default
            except ValueError:  # arrays
                same = False
            if not (isinstance(same, bool) and same):
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"


class Progress:
    """Periodic progress lines with a rate and the time left.

    Parameters
    ----------
    total : int
        Number of units of work.
    label : str
        Printed at the start of every line.
    unit : str
        Name of a unit of work, e.g. ``"sites"``.
    enabled : bool
        When False, nothing is printed.
    interval : float
        Seconds between lines.
    """

    def __init__(self, total, label, unit, enabled=True, interval=10.0):
        self.total = total
        self.label = label
        self.unit = unit
        self.enabled = enabled
        self.interval = interval
        self.done = 0
        self.start = time.perf_counter()
        self._last = self.start

    def update(self, amount, extra=""):
        self.done += amount
        now = time.perf_counter()
        if not self.enabled or now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self.start
        rate = self.done / max(elapsed, 1e-9)
        left = (self.total - self.done) / max(rate, 1e-9)
        print(
            f"{self.label} {self.done}/{self.total} {self.unit} "
            f"({100 * self.done / max(self.total, 1):.0f}%), "
            f"{rate:,.0f} {self.unit}/s, {left:.0f} s left{extra}",
            flush=True,
        )

    @property
    def elapsed(self):
        return time.perf_counter() - self.start
