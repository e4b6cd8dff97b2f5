"""scikit-learn's MLP on the splits written by bench/tabular/splits.cpp.

Usage: /usr/bin/python3 bench/tabular/sklearn_mlp.py SPLIT_DIR [SEEDS]

The settings match examples/08_tabular.cpp and 09_regression.cpp: standardised inputs
(StandardScaler fitted on the training part), one hidden layer of 100 ReLU units, Adam
with learning rate 1e-3, mini-batches of 32, 200 epochs without early stopping, no L2
(alpha=0); the regression targets are standardised too and the RMSE is in their units.
Prints one line per data set: the mean and range over SEEDS (default 5) random_states.
"""
import sys
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

warnings.simplefilter("ignore", ConvergenceWarning)


def load(path):
    d = np.loadtxt(path, delimiter=",", ndmin=2)
    return d[:, :-1], d[:, -1]


def main():
    split_dir = sys.argv[1]
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    common = dict(hidden_layer_sizes=(100,), activation="relu", solver="adam",
                  learning_rate_init=1e-3, batch_size=32, max_iter=200, alpha=0.0,
                  tol=0.0, n_iter_no_change=10**9)
    for name in ["breast_cancer", "iris", "wine_data", "diabetes"]:
        xtr, ytr = load(f"{split_dir}/{name}.train.csv")
        xte, yte = load(f"{split_dir}/{name}.test.csv")
        sx = StandardScaler().fit(xtr)
        scores = []
        for seed in range(seeds):
            if name == "diabetes":
                sy = StandardScaler().fit(ytr.reshape(-1, 1))
                m = MLPRegressor(random_state=seed, **common)
                m.fit(sx.transform(xtr), sy.transform(ytr.reshape(-1, 1)).ravel())
                p = sy.inverse_transform(m.predict(sx.transform(xte)).reshape(-1, 1)).ravel()
                scores.append(float(np.sqrt(np.mean((p - yte) ** 2))))
            else:
                m = MLPClassifier(random_state=seed, **common)
                m.fit(sx.transform(xtr), ytr.astype(int))
                scores.append(100.0 * float(np.mean(m.predict(sx.transform(xte)) == yte)))
        what = "test RMSE" if name == "diabetes" else "test accuracy %"
        print(f"{name}: {what} mean {np.mean(scores):.2f} min {min(scores):.2f} "
              f"max {max(scores):.2f} over {seeds} seeds (n_train {len(ytr)}, n_test {len(yte)})")


if __name__ == "__main__":
    main()
