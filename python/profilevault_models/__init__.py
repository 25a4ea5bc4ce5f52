"""Read ProfileVault model artifacts and score with them as `profilectl score` does.

    import profilevault_models as pvm
    m = pvm.load("churn.json")
    m.features              # the feature names, in the order X's columns must follow
    m.predict(X)            # linear: the value; logistic / random forest: P(target = 1); kmeans: the segment
    m.predict_proba(X)      # logistic / random forest: columns P(0), P(1)
    m.transform(X)          # regressions: the clamped inputs; random forest: each tree's leaf; kmeans: distances
    m.to_sklearn()          # a fitted scikit-learn estimator (linear, logistic, kmeans) for m.prepare(X)

X is a 2-D array-like with one column per feature (in `m.features` order) or a mapping from
feature name to a column. Derived features (per-subject event aggregates, `m.derived`) are
values you compute as the artifact defines them (docs/models.md).

The artifact's MAC is NOT checked: it is the vault's integrity check, an HMAC under a key
derived from the store's keyring, which a reader outside the vault must not hold. This reader
needs no secret; an artifact is trusted as far as the file it came from.

The arithmetic follows the Swift code step by step (PrivateModels: Regression.predict,
RandomForest.predict, KMeans.nearest; Scoring.problem for the checks), in the same order of
operations, so scores agree with `profilectl score` to the last bits (tested to 1e-9 by
scripts/models-python-test.sh).
"""

import json
import math

import numpy as np

__all__ = ["load", "from_dict", "Model", "ArtifactError", "SCORED_KINDS"]
__version__ = "0.1.0"

SCORED_KINDS = ("linear_regression", "logistic_regression", "random_forest", "kmeans")
KINDS = ("segments", "kmeans", "linear_regression", "logistic_regression", "recommender", "association_rules", "random_forest")
MAX_FEATURES, MAX_TREES, MAX_DEPTH, MAX_CENTROIDS = 1024, 1000, 16, 64


class ArtifactError(ValueError):
    """The artifact cannot be read or scored (the reason says why)."""


def load(path):
    """Loads an artifact from a path or an open file (no secret needed; the MAC is not checked)."""
    if hasattr(path, "read"):
        return from_dict(json.load(path))
    with open(path, "r", encoding="utf-8") as f:
        return from_dict(json.load(f))


def from_dict(d):
    """An artifact already parsed from JSON."""
    if not isinstance(d, dict) or d.get("model") not in KINDS:
        raise ArtifactError("not a model artifact (an object whose model is one of %s)" % ", ".join(KINDS))
    return Model(d)


def _finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class Model:
    """One artifact. Every field of the JSON is kept in `raw`; the common ones are attributes."""

    def __init__(self, d):
        self.raw = d
        self.kind = d["model"]
        self.features = list(d.get("features") or [])
        self.feature_bounds = [list(b) for b in (d.get("feature_bounds") or [])]
        self.params = dict(d.get("params") or {})
        self.derived = dict(d.get("derived") or {})
        self.target = d.get("target")
        self.privacy = d.get("privacy")
        self.mac = d.get("mac")

    # -- checks (Scoring.problem) -------------------------------------------------------------

    def problem(self):
        """Why this artifact cannot be scored (None: it can): the checks of `profilectl score`."""
        d = self.raw
        if self.kind not in SCORED_KINDS:
            return "a %s model is not scored (score serves %s)" % (self.kind, ", ".join(SCORED_KINDS))
        n = len(self.features)
        if not 1 <= n <= MAX_FEATURES:
            return "the model needs 1 to %d features" % MAX_FEATURES
        if len(set(self.features)) != n:
            return "a feature is listed twice"
        if len(self.feature_bounds) != n:
            return "feature_bounds has %d entries for %d features" % (len(self.feature_bounds), n)
        for i, b in enumerate(self.feature_bounds):
            if len(b) != 2 or not (_finite(b[0]) and _finite(b[1])) or not b[0] < b[1]:
                return "feature_bounds[%d] is not a pair of finite numbers lower < upper" % i
        if self.kind in ("linear_regression", "logistic_regression"):
            c, b0 = d.get("coefficients"), d.get("intercept")
            if not isinstance(c, list) or len(c) != n:
                return "coefficients must have one number per feature (%d)" % n
            if not _finite(b0) or not all(_finite(x) for x in c):
                return "the intercept and coefficients must be finite numbers"
            bound = abs(b0)
            for ci, b in zip(c, self.feature_bounds):
                bound += abs(ci) * max(abs(b[0]), abs(b[1]))
            if not math.isfinite(bound) or bound >= 1e300:
                return "the coefficients are so large that a score would overflow"
        elif self.kind == "random_forest":
            trees = d.get("trees")
            if not isinstance(trees, list) or not 1 <= len(trees) <= MAX_TREES:
                return "a random forest needs 1 to %d trees" % MAX_TREES
            names = set(self.features)
            for k, t in enumerate(trees):
                tf, cuts, probs = t.get("features") or [], t.get("cuts") or [], t.get("leaf_probabilities") or []
                if not 1 <= len(tf) <= MAX_DEPTH or len(cuts) != len(tf):
                    return "trees[%d]: features and cuts must have the same length, 1 to %d" % (k, MAX_DEPTH)
                if not all(f in names for f in tf):
                    return "trees[%d]: a tree feature is not a feature of the model" % k
                if not all(_finite(c) for c in cuts):
                    return "trees[%d]: a cut is not a finite number" % k
                if len(probs) != 1 << len(tf):
                    return "trees[%d]: leaf_probabilities must have 2^levels (%d) entries" % (k, 1 << len(tf))
                if not all(_finite(p) and 0 <= p <= 1 for p in probs):
                    return "trees[%d]: a leaf probability is not in [0, 1]" % k
        elif self.kind == "kmeans":
            c = d.get("centroids")
            if not isinstance(c, list) or not 1 <= len(c) <= MAX_CENTROIDS:
                return "a kmeans model needs 1 to %d centroids" % MAX_CENTROIDS
            if not all(isinstance(p, list) and len(p) == n and all(_finite(x) for x in p) for p in c):
                return "every centroid must have one finite number per feature (%d)" % n
        return None

    def _check(self):
        p = self.problem()
        if p is not None:
            raise ArtifactError(p)

    # -- inputs -------------------------------------------------------------------------------

    def _matrix(self, X):
        """X as a float64 (n, d) array in feature order."""
        if isinstance(X, dict) or (hasattr(X, "keys") and hasattr(X, "__getitem__") and not hasattr(X, "shape")):
            missing = [f for f in self.features if f not in X]
            if missing:
                raise ArtifactError("X lacks feature(s) %s" % ", ".join(missing))
            X = np.column_stack([np.asarray(X[f], dtype=np.float64).reshape(-1) for f in self.features])
        elif hasattr(X, "columns") and all(f in list(X.columns) for f in self.features):
            X = np.column_stack([np.asarray(X[f], dtype=np.float64) for f in self.features])
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ArtifactError("X must have %d columns (%s)" % (len(self.features), ", ".join(self.features)))
        if not np.isfinite(X).all():
            raise ArtifactError("X holds a missing or non-finite value: such subjects are not scored (as profilectl score)")
        return X

    def clip(self, X):
        """X clamped to feature_bounds, column by column: min(upper, max(lower, x))."""
        X = self._matrix(X)
        out = np.empty_like(X)
        for j, (lo, hi) in enumerate(self.feature_bounds):
            out[:, j] = np.minimum(float(hi), np.maximum(float(lo), X[:, j]))
        return out

    def unit(self, X):
        """Clamped and scaled to [0, 1] per feature: (clamp(x) - lower) / (upper - lower)."""
        C = self.clip(X)
        for j, (lo, hi) in enumerate(self.feature_bounds):
            C[:, j] = (C[:, j] - float(lo)) / (float(hi) - float(lo))
        return C

    def prepare(self, X):
        """What `to_sklearn()`'s estimator consumes: the clamped inputs (kmeans: unit-scaled)."""
        self._check()
        return self.unit(X) if self.kind == "kmeans" else self.clip(X)

    # -- scoring ------------------------------------------------------------------------------

    def _linear(self, X):
        C = self.clip(X)
        s = np.full(C.shape[0], float(self.raw["intercept"]))
        for j, c in enumerate(self.raw["coefficients"]):   # the Swift order: intercept, then each term
            s = s + float(c) * C[:, j]
        return s

    def _leaves(self, X):
        X = self._matrix(X)
        index = {f: j for j, f in enumerate(self.features)}
        leaves = np.zeros((X.shape[0], len(self.raw["trees"])), dtype=np.int64)
        for k, t in enumerate(self.raw["trees"]):
            for level, (name, cut) in enumerate(zip(t["features"], t["cuts"])):
                leaves[:, k] |= (X[:, index[name]] >= float(cut)).astype(np.int64) << level
        return leaves

    def _forest(self, X):
        leaves = self._leaves(X)
        trees = self.raw["trees"]
        total = np.zeros(leaves.shape[0])
        for k, t in enumerate(trees):   # the Swift order: a running sum over the trees, then / T
            probs = np.asarray(t["leaf_probabilities"], dtype=np.float64)
            total = total + probs[leaves[:, k]]
        return total / float(len(trees))

    def _sq_distances(self, X):
        U = self.unit(X)
        f = np.asarray(self.feature_bounds, dtype=np.float64)
        lo, hi = f[:, 0], f[:, 1]
        D = np.empty((U.shape[0], len(self.raw["centroids"])))
        for k, c in enumerate(self.raw["centroids"]):
            cu = (np.minimum(hi, np.maximum(lo, np.asarray(c, dtype=np.float64))) - lo) / (hi - lo)
            s = np.zeros(U.shape[0])
            for j in range(U.shape[1]):   # the Swift order: a running sum over the features
                t = U[:, j] - cu[j]
                s = s + t * t
            D[:, k] = s
        return D

    def predict(self, X):
        """linear_regression: the predicted value; logistic_regression, random_forest:
        P(target = 1); kmeans: the segment (index of the nearest centroid, ties to the lowest)."""
        self._check()
        if self.kind == "linear_regression":
            return self._linear(X)
        if self.kind == "logistic_regression":
            return 1.0 / (1.0 + np.exp(-self._linear(X)))
        if self.kind == "random_forest":
            return self._forest(X)
        return np.argmin(self._sq_distances(X), axis=1)   # the first minimum: ties to the lowest index

    def predict_proba(self, X):
        """logistic_regression, random_forest: an (n, 2) array of P(target = 0), P(target = 1)."""
        self._check()
        if self.kind not in ("logistic_regression", "random_forest"):
            raise ArtifactError("predict_proba: a %s model predicts no probability" % self.kind)
        p = self.predict(X)
        return np.column_stack([1.0 - p, p])

    def transform(self, X):
        """Regressions: the clamped inputs the coefficients apply to; random_forest: each tree's
        leaf index (n, trees); kmeans: the Euclidean distance to each centroid in unit scale
        (as scikit-learn's KMeans.transform)."""
        self._check()
        if self.kind == "random_forest":
            return self._leaves(X)
        if self.kind == "kmeans":
            return np.sqrt(self._sq_distances(X))
        return self.clip(X)

    def to_sklearn(self):
        """A fitted scikit-learn estimator holding the parameters, for `prepare(X)` (it does not
        clamp): LinearRegression, LogisticRegression (classes 0, 1) or KMeans (centroids in unit
        scale). Needs scikit-learn; a random forest of oblivious trees has no scikit-learn form."""
        self._check()
        try:
            import sklearn  # noqa: F401
        except ImportError as e:
            raise ImportError("to_sklearn() needs scikit-learn (pip install scikit-learn)") from e
        d = len(self.features)
        if self.kind == "linear_regression":
            from sklearn.linear_model import LinearRegression
            m = LinearRegression()
            m.coef_ = np.asarray(self.raw["coefficients"], dtype=np.float64)
            m.intercept_ = float(self.raw["intercept"])
        elif self.kind == "logistic_regression":
            from sklearn.linear_model import LogisticRegression
            m = LogisticRegression()
            m.coef_ = np.asarray([self.raw["coefficients"]], dtype=np.float64)
            m.intercept_ = np.asarray([self.raw["intercept"]], dtype=np.float64)
            m.classes_ = np.asarray([0, 1])
        elif self.kind == "kmeans":
            from sklearn.cluster import KMeans
            centroids = self.raw["centroids"]
            m = KMeans(n_clusters=len(centroids))
            f = np.asarray(self.feature_bounds, dtype=np.float64)
            lo, hi = f[:, 0], f[:, 1]
            m.cluster_centers_ = np.asarray([(np.minimum(hi, np.maximum(lo, np.asarray(c, dtype=np.float64))) - lo) / (hi - lo)
                                             for c in centroids])
            m._n_threads = 1
            m.labels_ = np.zeros(0, dtype=np.int32)
            m.inertia_ = 0.0
            m.n_iter_ = 0
        else:
            raise ArtifactError("to_sklearn: a %s model has no scikit-learn estimator" % self.kind)
        m.n_features_in_ = d
        return m

    def __repr__(self):
        return "<profilevault_models.Model %s: %s>" % (self.kind, ", ".join(self.features))
