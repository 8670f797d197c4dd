"""Probes: closed-form ridge, hyper-parameter choice on train only, metrics."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.metrics import f1_score, mean_absolute_error, mean_squared_error, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mfm.eval import probes
from mfm.eval.evaluate import classification_metrics, regression_metrics, score_method
from mfm.eval.probes import RidgeProbe, fit_probe, macro_f1


@pytest.mark.parametrize("shape", [(40, 100), (300, 20)])
def test_ridge_probe_equals_sklearn_pipeline(shape):
    rng = np.random.default_rng(0)
    n, d = shape
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 10, d) + rng.uniform(-5, 5, d)
    x[:, 3] = 2.0  # a constant column
    y = 2 * x[:, 0] + rng.standard_normal(n)
    cls = rng.choice(["a", "b", "c"], n)
    xt = rng.standard_normal((15, d))
    for alpha in (0.1, 10.0, 1e4):
        ref = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, y).predict(xt)
        np.testing.assert_allclose(RidgeProbe("regression", (alpha,)).fit(x, y).predict(xt), ref)
        ref_c = make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha)).fit(x, cls)
        ours = RidgeProbe("classification", (alpha,)).fit(x, cls)
        np.testing.assert_allclose(ours.decision_grid(xt)[0], ref_c.decision_function(xt))
        assert (ours.predict(xt) == ref_c.predict(xt)).all()


def test_regression_metrics_equal_sklearn_on_a_hand_made_split():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 5))
    y = x @ rng.standard_normal(5) + 0.5 * rng.standard_normal(30)
    tr, te = np.arange(0, 24), np.arange(24, 30)
    result, params = score_method(x, y, "regression", [(tr, te)], "ridge", seed=0)
    pred = make_pipeline(StandardScaler(), Ridge(alpha=params[0])).fit(x[tr], y[tr]).predict(x[te])
    assert result["rmse"][0] == pytest.approx(np.sqrt(mean_squared_error(y[te], pred)))
    assert result["mae"][0] == pytest.approx(mean_absolute_error(y[te], pred))
    assert result["r2"][0] == pytest.approx(r2_score(y[te], pred))
    assert result["r2"][1] == 0.0  # one run: std 0
    m = regression_metrics(y[te], pred)
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y[te], pred)))


def test_classification_metrics_equal_sklearn():
    rng = np.random.default_rng(2)
    t, p = rng.integers(0, 5, 60), rng.integers(0, 3, 60)
    t[t == 4] = 3  # class 4: neither true nor predicted; class 3 never predicted
    macro, weighted, per_class, support = classification_metrics(t, p, 6)
    assert macro == pytest.approx(f1_score(t, p, average="macro"))
    assert weighted == pytest.approx(f1_score(t, p, average="weighted"))
    assert np.isnan(per_class[4]) and np.isnan(per_class[5]) and per_class[3] == 0
    np.testing.assert_allclose(per_class[:4], f1_score(t, p, average=None, labels=range(4)))
    assert support.sum() == 60
    assert macro_f1(t, p) == pytest.approx(f1_score(t, p, average="macro"))


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_probe_never_sees_test_items_while_choosing(monkeypatch, kind):
    """Features carry the item index in column 0; every fit and selection predict is train."""
    rng = np.random.default_rng(3)
    n = 60
    x = np.column_stack([np.arange(n), rng.standard_normal((n, 4))])
    y = rng.standard_normal(n) if kind == "regression" else rng.choice(["a", "b"], n)
    seen: list[tuple[str, set]] = []

    class Recording(RidgeProbe):
        def fit(self, xx, yy):
            seen.append(("fit", set(xx[:, 0].astype(int))))
            return super().fit(xx, yy)

        def predict_grid(self, xx):
            if len(self.alphas) > 1:  # the grid search: validation predictions
                seen.append(("select", set(xx[:, 0].astype(int))))
            return super().predict_grid(xx)

    monkeypatch.setattr(probes, "RidgeProbe", Recording)
    splits = [(np.arange(12, n), np.arange(12)), (np.arange(48), np.arange(48, n))]
    for tr, te in splits:
        seen.clear()
        score_method(x, y, kind, [(tr, te)], "ridge", seed=0)
        assert [s[0] for s in seen] == ["fit", "select", "fit"]  # choose, then refit
        for _, rows in seen:
            assert rows <= set(tr) and not rows & set(te)
        assert seen[-1][1] == set(tr)  # the final fit is the whole train part


def test_sklearn_probes_never_see_test_items(monkeypatch):
    rng = np.random.default_rng(4)
    n = 40
    x = np.column_stack([np.arange(n), rng.standard_normal((n, 3))])
    y = rng.standard_normal(n)
    fits: list[set] = []
    real_fit = probes._fit

    def recording_fit(est, xx, yy, kind):
        fits.append(set(xx[:, 0].astype(int)))
        return real_fit(est, xx, yy, kind)

    monkeypatch.setattr(probes, "_fit", recording_fit)
    monkeypatch.setitem(probes.GRIDS, "rf", (2, 4))
    monkeypatch.setattr(probes, "RF_TREES", 5)
    tr, te = np.arange(10, n), np.arange(10)
    _, depth = fit_probe(x[tr], y[tr], "regression", "rf", seed=0)
    assert depth in (2, 4) and len(fits) == 3  # two grid fits, then the refit
    assert all(rows <= set(tr) and not rows & set(te) for rows in fits)


def planted(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n) * 3 + 10
    x = np.column_stack([y + 0.05 * rng.standard_normal(n), rng.standard_normal((n, 20))])
    return x, y


def test_planted_signal_gives_r2_near_one_and_random_features_do_not():
    from mfm.eval.splits import make_splits

    x, y = planted()
    splits = make_splits("random", len(y), 5, 0.2, 0)
    good, _ = score_method(x, y, "regression", splits, "ridge", seed=0)
    noise = np.random.default_rng(9).standard_normal(x.shape)
    bad, _ = score_method(noise, y, "regression", splits, "ridge", seed=0)
    assert good["r2"][0] > 0.98
    assert bad["r2"][0] <= 0.05


@pytest.mark.parametrize("probe", ["rf", "mlp"])
def test_other_probes_learn_the_planted_signal(monkeypatch, probe):
    monkeypatch.setattr(probes, "RF_TREES", 20)
    rng = np.random.default_rng(5)
    y = rng.standard_normal(120) * 3 + 10
    x = np.column_stack([y[:, None] + 0.3 * rng.standard_normal((120, 6)), rng.random((120, 4))])
    tr, te = np.arange(96), np.arange(96, 120)
    est, _ = fit_probe(x[tr], y[tr], "regression", probe, seed=0)
    assert r2_score(y[te], est.predict(x[te])) > 0.8
