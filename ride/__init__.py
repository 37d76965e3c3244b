"""ride: the recurrent image density estimator (Theis & Bethge, 2015).

Public names
------------
RIDE
    The image density estimator: spatial LSTMs topped by an MCGSM.
PatchRIDE
    RIDE for fixed-size patches, including the BSDS300 protocol.
SpatialLSTM
    One spatial LSTM layer (forward, backward and single-site steps).
MCGSM
    Mixture of conditional Gaussian scale mixtures, ``p(y | x)``.
WhiteningPreconditioner
    Conditional whitening of input/output pairs.
load, save
    HDF5 persistence for every ``ride`` model.
NotFittedError, ConvergenceWarning
    Raised or warned by the estimators.

Modules ``ride.datasets`` (embedded images, dead leaves, patches, BSDS300) and
``ride.neighborhoods`` (causal masks, extraction and its adjoint) hold the
data helpers.
"""

from ._validation import ConvergenceWarning, NotFittedError
from .io import load, save
from .mcgsm import MCGSM
from .preconditioner import WhiteningPreconditioner
from .model import RIDE
from .slstm import SpatialLSTM
from .patch import PatchRIDE

__version__ = "0.1.0.dev0"

__all__ = [
    "RIDE",
    "SpatialLSTM",
    "PatchRIDE",
    "MCGSM",
    "WhiteningPreconditioner",
    "ConvergenceWarning",
    "NotFittedError",
    "load",
    "save",
]
