#!/usr/bin/python3
"""The numpy peers of bench/run.sh, in float32 on the same data and initial weights.

numpy-seed:    the seed algorithm as in Nielsen's network.py: a Python loop over the
               samples of each mini-batch, backprop(x, y) per sample (W1-W3, W5 batch 1, W6).
numpy-batched: the same maths with whole-batch matrix products (W1-W4, W5 batch 10000),
               as bench_backprop's plain-Eigen peer.

Run with Debian's /usr/bin/python3 (python3-numpy). Writes a JSON list of two reports
(same layout as the C++ executables) to --json. The data file is the one written by
`bench_backprop --write-data`; without --data the synthetic data is generated here
with the same counter-based generator as bench/common.hpp.
"""
import argparse
import json
import os
import random
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--samples", type=int, default=50000)
    p.add_argument("--data", default="")
    p.add_argument("--json", default="")
    p.add_argument("--only", default="")
    p.add_argument("--limit", default="", help="per-workload sample caps, e.g. W1=10000")
    p.add_argument("--seed-limit", default="", help="caps for the per-sample seed peer only")
    p.add_argument("--check", action="store_true")
    p.add_argument("--peak", action="store_true")
    return p.parse_args()


ARGS = parse_args()
# Before numpy loads OpenBLAS: its pool size is fixed at start-up unless threadpoolctl is there.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_info = None
    threadpool_limits = None

# ---- workloads, generator and data: mirrors bench/common.hpp ----

WORKLOADS = [
    dict(id="W1", sizes=[784, 30, 10], hidden="sigmoid", output="sigmoid", cost="quadratic",
         batch=10, eta=3.0, gain=0.0, bias_scale=1.0),
    dict(id="W2", sizes=[784, 100, 10], hidden="sigmoid", output="sigmoid", cost="quadratic",
         batch=10, eta=3.0, gain=0.0, bias_scale=1.0),
    dict(id="W3", sizes=[784, 256, 128, 10], hidden="sigmoid", output="sigmoid",
         cost="quadratic", batch=64, eta=3.0, gain=0.0, bias_scale=1.0),
    dict(id="W4", sizes=[784, 1024, 1024, 10], hidden="relu", output="softmax",
         cost="log_likelihood", batch=256, eta=0.1, gain=2.0, bias_scale=0.0),
]
W5 = dict(id="W5", sizes=[784, 100, 10], hidden="sigmoid", output="sigmoid", cost="quadratic",
          batch=1, eta=3.0, gain=0.0, bias_scale=1.0)
W6 = dict(id="W6", sizes=[784, 30, 10], hidden="sigmoid", output="sigmoid", cost="quadratic",
          batch=1, eta=3.0, gain=0.0, bias_scale=1.0)
CHECK_SAMPLES = 5000
CHECK_EVAL = 1000


def forward_flops(w):
    return float(sum(2 * a * b for a, b in zip(w["sizes"][:-1], w["sizes"][1:])))


def training_flops(w):
    return 3.0 * forward_flops(w)


M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(z):
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(stream, idx):
    with np.errstate(over="ignore"):
        h = splitmix64((np.uint64(stream) << np.uint64(40)) + idx.astype(np.uint64))
    return (h >> np.uint64(40)).astype(np.float64) * 2.0**-24


def normal(stream, n):
    i = np.arange(n, dtype=np.uint64)
    u1 = uniform(stream, 2 * i)
    u2 = uniform(stream, 2 * i + 1)
    return np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(6.283185307179586 * u2)


def initial_parameters(w):
    """[(W (out x in) float32, b (out x 1) float32)] per layer, as common.hpp."""
    base = 100 + 10 * int(w["id"][1:])
    out = []
    for l, (n_in, n_out) in enumerate(zip(w["sizes"][:-1], w["sizes"][1:])):
        ws = np.sqrt(w["gain"] / n_in) if w["gain"] > 0 else 1.0
        W = (ws * normal(base + l, n_in * n_out)).astype(np.float32)
        W = np.ascontiguousarray(W.reshape(n_in, n_out).T)  # column-major out x in
        b = (w["bias_scale"] * normal(base + 5 + l, n_out)).astype(np.float32).reshape(n_out, 1)
        out.append((W, b))
    return out


def synthetic_data(n):
    proto = uniform(2, np.arange(10 * 784)) < 0.19
    labels = np.minimum(9, (uniform(1, np.arange(n)) * 10).astype(np.int64)).astype(np.uint8)
    x = np.zeros((n, 784), dtype=np.float32)
    for first in range(0, n, 5000):
        rows = np.arange(first, min(n, first + 5000))
        k = (rows[:, None] * 784 + np.arange(784)[None, :]).astype(np.uint64)
        p = np.where(proto.reshape(10, 784)[labels[rows]], 0.8, 0.04)
        on = uniform(3, k) < p
        x[rows] = np.where(on, 0.25 + 0.75 * uniform(4, k), 0.0).astype(np.float32)
    return x, labels, "synthetic (seeded, 784 px, ~18% nonzero, 10 classes)"


def read_data(path):
    with open(path, "rb") as f:
        if f.read(8) != b"BPBENCH1":
            raise SystemExit(path + ": not a data file")
        n, inputs, classes = np.frombuffer(f.read(24), dtype=np.int64)
        x = np.frombuffer(f.read(int(n) * int(inputs) * 4), dtype=np.float32)
        labels = np.frombuffer(f.read(int(n)), dtype=np.uint8)
    return x.reshape(int(n), int(inputs)), labels, "file " + path


# ---- the seed algorithm (network.py), float32 ----


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


class SeedNetwork:
    """Nielsen's network.py Network, with given float32 parameters."""

    def __init__(self, params):
        self.num_layers = len(params) + 1
        self.weights = [W.copy() for W, _ in params]
        self.biases = [b.copy() for _, b in params]

    def feedforward(self, a):
        for b, w in zip(self.biases, self.weights):
            a = sigmoid(np.dot(w, a) + b)
        return a

    def SGD_epoch(self, training_data, mini_batch_size, eta, shuffle=True):
        n = len(training_data)
        if shuffle:
            random.shuffle(training_data)
        mini_batches = [training_data[k:k + mini_batch_size] for k in range(0, n, mini_batch_size)]
        for mini_batch in mini_batches:
            self.update_mini_batch(mini_batch, eta)

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros(b.shape, dtype=b.dtype) for b in self.biases]
        nabla_w = [np.zeros(w.shape, dtype=w.dtype) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        rate = np.float32(eta / len(mini_batch))
        self.weights = [w - rate * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - rate * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        nabla_b = [None] * len(self.biases)
        nabla_w = [None] * len(self.weights)
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        delta = (activations[-1] - y) * sigmoid_prime(zs[-1])
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, self.num_layers):
            z = zs[-l]
            sp = sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return (nabla_b, nabla_w)


# ---- the batched version (same maths as bench_backprop's plain-Eigen peer) ----


class BatchedNetwork:
    def __init__(self, w, params):
        self.w = w
        self.weights = [W.copy() for W, _ in params]
        self.biases = [b.copy() for _, b in params]

    def forward(self, X):
        zs, acts = [], [X]
        L = len(self.weights)
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            z = W @ acts[-1]
            z += b
            act = self.w["output"] if l + 1 == L else self.w["hidden"]
            if act == "sigmoid":
                a = 1.0 / (1.0 + np.exp(-z))
            elif act == "relu":
                a = np.maximum(z, 0)
            else:
                a = np.exp(z - z.max(axis=0, keepdims=True))
                a /= a.sum(axis=0, keepdims=True)
            zs.append(z)
            acts.append(a)
        return zs, acts

    def step(self, X, Y):
        zs, acts = self.forward(X)
        rate = np.float32(self.w["eta"] / X.shape[1])
        a = acts[-1]
        d = (a - Y) * a * (1 - a) if self.w["cost"] == "quadratic" else a - Y
        for l in range(len(self.weights) - 1, -1, -1):
            if l > 0:
                g = self.weights[l].T @ d
                if self.w["hidden"] == "sigmoid":
                    d_prev = g * acts[l] * (1 - acts[l])
                else:
                    d_prev = np.where(zs[l - 1] > 0, g, 0)
            self.weights[l] -= rate * (d @ acts[l].T)
            self.biases[l] -= rate * d.sum(axis=1, keepdims=True)
            if l > 0:
                d = d_prev

    def epoch(self, X, Y, order):
        m = self.w["batch"]
        for k in range(0, len(order), m):
            idx = order[k:k + m]
            self.step(X[:, idx], Y[:, idx])


# ---- measurement and reports (same JSON layout as bench/common.hpp) ----


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


class Report:
    def __init__(self, peer, meta):
        self.peer = peer
        self.meta = dict(meta, loadavg_start=load_average())
        self.records = []
        self.skipped = []

    def add(self, workload, kind, samples, flops, note, fn=None, runs=0, check_value=None):
        times, cpu = [], []
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        med = float(np.median(times)) if times else None
        rec = dict(workload=workload, kind=kind, samples=samples, flops_per_sample=flops,
                   times=times, cpu_times=cpu, median_s=med, check_value=check_value, note=note)
        self.records.append(rec)
        msg = f"check value {check_value:.6g}" if check_value is not None else (
            f"{samples} samples, median {med:.4g} s, {samples / med:.6g} samples/s, "
            f"{samples / med * flops * 1e-9:.4g} GFLOP/s")
        print(f"[{self.peer} t={ARGS.threads}] {workload} {kind}: {msg}", file=sys.stderr)

    def skip(self, workload, why):
        print(f"[{self.peer}] {workload}: skipped: {why}", file=sys.stderr)
        self.skipped.append(dict(workload=workload, why=why))

    def as_json(self):
        self.meta["loadavg_end"] = load_average()
        return dict(peer=self.peer, threads=ARGS.threads, meta=self.meta, skipped=self.skipped,
                    records=self.records)


def limits(text):
    out = {}
    for kv in filter(None, text.split(",")):
        k, v = kv.split("=")
        out[k] = int(v)
    return out


def blas_description():
    if threadpool_info is not None:
        info = [dict((k, v) for k, v in d.items() if k != "filepath") | {"file": d.get("filepath")}
                for d in threadpool_info()]
        return json.dumps(info)
    import io
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        np.show_config()
    return buf.getvalue()


def check_cost(w, out, labels):
    if w["cost"] == "quadratic":
        y = np.zeros_like(out)
        y[labels, np.arange(out.shape[1])] = 1
        return float(0.5 * ((out.astype(np.float64) - y) ** 2).sum() / out.shape[1])
    a = out[labels, np.arange(out.shape[1])].astype(np.float64)
    return float(-np.log(np.maximum(a, 1e-30)).sum() / out.shape[1])


def main():
    only = set(filter(None, ARGS.only.split(",")))
    wants = lambda wid: not only or wid in only  # noqa: E731
    lim, seed_lim = limits(ARGS.limit), limits(ARGS.seed_limit)
    if ARGS.data:
        x_rows, labels, source = read_data(ARGS.data)
    else:
        x_rows, labels, source = synthetic_data(max(ARGS.samples, 10000))
    n_all = x_rows.shape[0]
    X = x_rows.T  # 784 x N, samples are columns (Fortran-ordered view of the file)
    Y = np.zeros((10, n_all), dtype=np.float32)
    Y[labels, np.arange(n_all)] = 1
    env = {k: os.environ.get(k, "(unset)") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    meta = dict(data=source, numpy=np.__version__, python=sys.version.split()[0],
                blas=blas_description(), env=json.dumps(env), dtype="float32")
    seed = Report("numpy-seed", meta)
    batched = Report("numpy-batched", meta)
    random.seed(42)
    rng = np.random.default_rng(42)

    def n_for(wid, caps):
        return min(ARGS.samples, n_all, lim.get(wid, n_all), caps.get(wid, n_all))

    def seed_data(n):
        return [(X[:, i:i + 1].copy(), Y[:, i:i + 1].copy()) for i in range(n)]

    if ARGS.check:
        w = WORKLOADS[0]
        net = SeedNetwork(initial_parameters(w))
        net.SGD_epoch(seed_data(CHECK_SAMPLES), w["batch"], w["eta"], shuffle=False)
        out = np.hstack([net.feedforward(X[:, i:i + 1]) for i in range(CHECK_EVAL)])
        seed.add("W1", "check", CHECK_SAMPLES, 0, "cost on the first 1000 samples",
                 check_value=check_cost(w, out, labels[:CHECK_EVAL]))
        for w in (WORKLOADS[0], WORKLOADS[3]):
            net = BatchedNetwork(w, initial_parameters(w))
            net.epoch(X, Y, np.arange(CHECK_SAMPLES))
            out = net.forward(X[:, :CHECK_EVAL])[1][-1]
            batched.add(w["id"], "check", CHECK_SAMPLES, 0, "cost on the first 1000 samples",
                        check_value=check_cost(w, out, labels[:CHECK_EVAL]))
        return seed, batched

    for w in WORKLOADS:
        if not wants(w["id"]):
            continue
        params = initial_parameters(w)
        if w["hidden"] == "sigmoid" and w["output"] == "sigmoid":
            n = n_for(w["id"], seed_lim)
            data = seed_data(n)
            holder = {}

            def run_seed():
                holder["net"] = SeedNetwork(params)
                holder["net"].SGD_epoch(data, w["batch"], w["eta"])

            seed.add(w["id"], "train", n, training_flops(w),
                     "network.py loop: per-sample backprop, random.shuffle", run_seed, ARGS.runs)
        else:
            seed.skip(w["id"], "the seed network.py has only sigmoid layers and quadratic cost")
        n = n_for(w["id"], {})

        def run_batched():
            net = BatchedNetwork(w, params)
            net.epoch(X, Y, rng.permutation(n))

        BatchedNetwork(w, params).epoch(X, Y, np.arange(min(n, 2048)))  # warm-up
        batched.add(w["id"], "train", n, training_flops(w),
                    "whole-batch products, X[:, idx] gather", run_batched, ARGS.runs)

    if wants("W7"):
        for r in (seed, batched):
            r.skip("W7", "no convolutional network in the numpy peers")

    if wants("W5"):
        params = initial_parameters(W5)
        n1 = min(10000, n_all)
        net = SeedNetwork(params)
        cols = [X[:, i:i + 1].copy() for i in range(n1)]
        seed.add("W5", "latency", n1, forward_flops(W5), "feedforward(x), x 784x1",
                 lambda: [net.feedforward(c) for c in cols], ARGS.runs)
        bnet = BatchedNetwork(W5, params)
        Xs = np.asfortranarray(X[:, :n1])
        batched.add("W5", "throughput", n1, forward_flops(W5), "forward(X[:, :10000])",
                    lambda: bnet.forward(Xs), max(ARGS.runs, 5))

    if wants("W6"):
        params = initial_parameters(W6)
        n = n_for("W6", seed_lim)
        net = SeedNetwork(params)
        data = seed_data(n)
        seed.add("W6", "backprop", n, training_flops(W6), "network.py backprop(x, y)",
                 lambda: [net.backprop(x, y) for x, y in data], ARGS.runs)

    if ARGS.peak:
        nn = 2048
        A = rng.random((nn, nn), dtype=np.float32)
        B = rng.random((nn, nn), dtype=np.float32)
        for t in (1, 2):
            if threadpool_limits is None:
                if t != ARGS.threads:
                    batched.skip(f"sgemm_t{t}", "threadpoolctl missing: cannot change threads")
                    continue
                ctx = None
            else:
                ctx = threadpool_limits(limits=t, user_api="blas")
            A @ B
            batched.add(f"sgemm_t{t}", "peak", 1, 2.0 * nn**3, "numpy float32 2048^3 (OpenBLAS)",
                        lambda: A @ B, max(ARGS.runs, 5))
            if ctx is not None:
                ctx.unregister()
    return seed, batched


if __name__ == "__main__":
    reports = main()
    text = json.dumps([r.as_json() for r in reports], indent=1)
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
