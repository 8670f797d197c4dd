"""Probes trained on frozen embeddings: ridge (default), random forest, MLP.

Every probe standardizes the features with statistics of the train part only, then fits
its model. Its one hyper-parameter is chosen on a validation split carved from the train
part (never from the test part), then the probe is refitted on the whole train part.

The ridge probe is solved in closed form for the whole alpha grid at once (one
eigendecomposition per fit), which gives the same solution as scikit-learn's
``make_pipeline(StandardScaler(), Ridge(alpha))`` (``RidgeClassifier`` for classes) in a
fraction of the time; the forest and the MLP are scikit-learn pipelines.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.compose import TransformedTargetRegressor
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mfm.eval.splits import validation_split

Probe = Literal["ridge", "rf", "mlp"]
Kind = Literal["regression", "classification"]
DEFAULT_PROBE: Probe = "ridge"
"""Ridge: the standard linear probe; closed form, so 10 runs x 4 methods take ~a second."""

GRIDS: dict[str, tuple[Any, ...]] = {
    "ridge": (0.1, 1.0, 10.0, 100.0, 1e3, 1e4),  # alpha
    "rf": (4, 8, None),  # max_depth
    "mlp": (1e-4, 1e-2, 1.0),  # L2 alpha
}
"""The hyper-parameter grid of each probe, searched on the validation split."""
DEFAULTS: dict[str, Any] = {"ridge": 10.0, "rf": 8, "mlp": 1e-2}
"""Used when the train part is too small to carve a validation split from."""
MIN_SELECT = 8
"""Fewest train items for which a validation split is carved."""
RF_TREES = 100
MLP_HIDDEN = (128,)


class RidgeProbe:
    """Standardize, then ridge regression (or one-vs-all ridge classification), in closed form.

    ``fit`` decomposes the standardized train features once; ``decision_grid`` then gives
    the predictions for every alpha of ``alphas`` without refitting.

    Args:
        kind: ``regression`` or ``classification``.
        alphas: The L2 penalties; ``predict`` uses the first.
    """

    def __init__(self, kind: str, alphas: Sequence[float] = (1.0,)) -> None:
        self.kind = kind
        self.alphas = np.asarray(alphas, dtype=np.float64)

    def fit(self, x: np.ndarray, y: np.ndarray) -> RidgeProbe:
        """Fit on ``x [n, d]`` and targets ``y [n]`` (values, or class labels)."""
        x = np.asarray(x, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 10 * np.finfo(np.float64).eps] = 1.0  # as StandardScaler
        self.scale_ = scale
        xs = (x - self.mean_) / scale
        xs -= xs.mean(axis=0)  # exactly centred: the intercept is then the target mean
        if self.kind == "regression":
            t = np.asarray(y, dtype=np.float64)[:, None]
        else:
            self.classes_, codes = np.unique(y, return_inverse=True)
            t = -np.ones((len(codes), len(self.classes_)))
            t[np.arange(len(codes)), codes] = 1.0  # RidgeClassifier's {-1, 1} targets
        self.offset_ = t.mean(axis=0)
        tc = t - self.offset_
        n, d = xs.shape
        if n <= d:  # dual: eigen of the n x n Gram matrix
            lam, q = np.linalg.eigh(xs @ xs.T)
            self.basis_, self.proj_ = xs.T @ q, q.T @ tc
        else:  # primal: eigen of the d x d covariance
            lam, v = np.linalg.eigh(xs.T @ xs)
            self.basis_, self.proj_ = v, v.T @ (xs.T @ tc)
        self.eig_ = np.clip(lam, 0.0, None)
        return self

    def decision_grid(self, x: np.ndarray) -> np.ndarray:
        """Decision values for every alpha: ``[A, n, outputs]``."""
        xb = ((np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_) @ self.basis_
        shrink = 1.0 / (self.eig_[None, :] + self.alphas[:, None])  # [A, k]
        return np.einsum("nk,ak,kc->anc", xb, shrink, self.proj_) + self.offset_

    def _output(self, decision: np.ndarray) -> np.ndarray:
        if self.kind == "regression":
            return decision[..., 0]
        return self.classes_[decision.argmax(axis=-1)]

    def predict_grid(self, x: np.ndarray) -> np.ndarray:
        """Predictions for every alpha: ``[A, n]``."""
        return self._output(self.decision_grid(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions with the first alpha: ``[n]``."""
        return self.predict_grid(x)[0]


def make_estimator(probe: str, kind: str, param: Any, seed: int = 0) -> Any:
    """A fresh, unfitted probe for one hyper-parameter value.

    Args:
        probe: ``ridge``, ``rf`` or ``mlp``.
        kind: ``regression`` or ``classification``.
        param: Ridge alpha, forest max_depth or MLP alpha.
        seed: Seed of the forest / MLP initialization.
    """
    reg = kind == "regression"
    if probe == "ridge":
        return RidgeProbe(kind, (param,))
    if probe == "rf":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestRegressor if reg else RandomForestClassifier
        model: BaseEstimator = cls(
            n_estimators=RF_TREES, max_depth=param, max_features="sqrt", random_state=seed
        )
    elif probe == "mlp":
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPRegressor if reg else MLPClassifier
        model = cls(hidden_layer_sizes=MLP_HIDDEN, alpha=param, max_iter=300, random_state=seed)
        if reg:  # the MLP trains badly on unscaled targets
            model = TransformedTargetRegressor(model, transformer=StandardScaler())
    else:
        raise ValueError(f"unknown probe {probe!r}; use one of {', '.join(GRIDS)}")
    return make_pipeline(StandardScaler(), model)


def _fit(est: Any, x: np.ndarray, y: np.ndarray, kind: str) -> Any:
    """Fit, falling back to a constant predictor when a sklearn classifier sees one class."""
    if kind == "classification" and len(np.unique(y)) < 2 and not isinstance(est, RidgeProbe):
        est = DummyClassifier(strategy="most_frequent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(x, y)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over the classes in ``y_true`` or ``y_pred`` (as sklearn's ``f1_score``)."""
    classes, codes = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    t, p = codes[: len(y_true)], codes[len(y_true) :]
    c = len(classes)
    tp = np.bincount(t[t == p], minlength=c)
    denom = np.bincount(t, minlength=c) + np.bincount(p, minlength=c)
    return float(np.mean(2 * tp / np.maximum(denom, 1)))


def val_score(kind: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Validation score, higher is better: -MSE (regression) or macro F1."""
    if kind == "regression":
        return -float(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2))
    return macro_f1(np.asarray(y_true), np.asarray(y_pred))


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    probe: str = DEFAULT_PROBE,
    *,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Choose the hyper-parameter on a validation split of ``(x, y)``, then refit on all of it.

    Args:
        x: Train features ``[n, d]`` (the train part only: the test part never comes here).
        y: Train targets ``[n]``.
        kind: ``regression`` or ``classification``.
        probe: ``ridge``, ``rf`` or ``mlp``.
        groups: Spatial block of each train item, to carve a grouped validation split.
        seed: Seed of the validation split and of the model.

    Returns:
        The fitted probe (with ``predict``) and the chosen hyper-parameter.
    """
    grid = GRIDS[probe]
    best = DEFAULTS[probe]
    if len(y) >= MIN_SELECT and len(grid) > 1:
        fit_idx, val_idx = validation_split(len(y), groups, seed)
        if probe == "ridge":  # every alpha from one decomposition
            preds = list(
                RidgeProbe(kind, grid).fit(x[fit_idx], y[fit_idx]).predict_grid(x[val_idx])
            )
        else:
            preds = [
                _fit(make_estimator(probe, kind, p, seed), x[fit_idx], y[fit_idx], kind).predict(
                    x[val_idx]
                )
                for p in grid
            ]
        scores = [val_score(kind, y[val_idx], pred) for pred in preds]
        best = grid[int(np.argmax(scores))]
    return _fit(make_estimator(probe, kind, best, seed), x, y, kind), best
