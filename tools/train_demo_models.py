"""Train the demo models bundled in src/fixq/data/ (run once, offline; the outputs are committed).

Optional requirements of this script only (fixq itself never imports them):
    scikit-learn>=1.3   (the digits data set and the MLP)
    torch>=2.0          (the CNN; CPU build: pip install /opt/wheels/torch-...-cpu-....whl)

    python tools/train_demo_models.py [--out src/fixq/data]

Data: scikit-learn's handwritten digits (1797 8x8 images, 10 classes, pixel values 0..16) scaled to
[0, 1] as float32 NCHW [N, 1, 8, 8].  A stratified 25% is held out as the test set
(digits_test_x.npy / digits_test_y.npy); 256 images of the training split form the calibration set
(digits_calib.npy).  Models (fixq.graph/1 float archives, float32 weights):
    digits_mlp.npz  flatten -> fc1 64x64 -> relu -> fc2 64x32 -> relu -> fc3 32x10
    digits_cnn.npz  conv1 1->16 3x3 p1 -> relu -> conv2 16->32 3x3 p1 -> relu -> maxpool 2
                    -> dw3 depthwise 3x3 p1 -> relu -> add (residual with the maxpool)
                    -> global_avgpool -> fc 32x10
Everything is seeded, single-threaded, deterministic.
"""
import argparse
import json
import os

import numpy as np

SEED = 0


def load_digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    calib = x_tr[np.random.default_rng(SEED).permutation(len(x_tr))[:256]]
    return x_tr, y_tr, x_te, y_te, calib


def save_model(path, weights, graph):
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    arrays["__graph__"] = np.array(json.dumps(graph))
    np.savez_compressed(path, **arrays)


def train_mlp(x_tr, y_tr):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(64, 32), activation="relu", alpha=1e-3, max_iter=600,
                        random_state=SEED, tol=1e-6, n_iter_no_change=30)
    clf.fit(x_tr.reshape(len(x_tr), -1), y_tr)
    weights = {}
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_), start=1):
        weights[f"fc{i}.weight"] = w.T  # sklearn stores [in, out]; fixq wants [out, in]
        weights[f"fc{i}.bias"] = b
    graph = {
        "format": "fixq.graph/1",
        "inputs": [{"name": "x", "shape": [None, 1, 8, 8]}],
        "nodes": [
            {"name": "flat", "op": "flatten", "inputs": ["x"]},
            {"name": "fc1", "op": "linear", "inputs": ["flat"]},
            {"name": "relu1", "op": "relu", "inputs": ["fc1"]},
            {"name": "fc2", "op": "linear", "inputs": ["relu1"]},
            {"name": "relu2", "op": "relu", "inputs": ["fc2"]},
            {"name": "fc3", "op": "linear", "inputs": ["relu2"]},
        ],
        "outputs": ["fc3"],
    }
    return weights, graph


def train_cnn(x_tr, y_tr):
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    torch.set_num_threads(1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.dw3 = nn.Conv2d(32, 32, 3, padding=1, groups=32)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            p = nn.functional.max_pool2d(x, 2)
            x = torch.relu(self.dw3(p)) + p
            return self.fc(x.mean(dim=(2, 3)))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(60):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    weights = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    graph = {
        "format": "fixq.graph/1",
        "inputs": [{"name": "x", "shape": [None, 1, 8, 8]}],
        "nodes": [
            {"name": "conv1", "op": "conv2d", "inputs": ["x"], "stride": 1, "padding": 1},
            {"name": "relu1", "op": "relu", "inputs": ["conv1"]},
            {"name": "conv2", "op": "conv2d", "inputs": ["relu1"], "stride": 1, "padding": 1},
            {"name": "relu2", "op": "relu", "inputs": ["conv2"]},
            {"name": "pool", "op": "maxpool2d", "inputs": ["relu2"], "kernel": 2, "stride": 2},
            {"name": "dw3", "op": "conv2d", "inputs": ["pool"], "padding": 1, "groups": 32},
            {"name": "relu3", "op": "relu", "inputs": ["dw3"]},
            {"name": "res", "op": "add", "inputs": ["relu3", "pool"]},
            {"name": "gap", "op": "global_avgpool", "inputs": ["res"]},
            {"name": "fc", "op": "linear", "inputs": ["gap"]},
        ],
        "outputs": ["fc"],
    }
    return weights, graph, net


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "src", "fixq", "data"))
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    x_tr, y_tr, x_te, y_te, calib = load_digits_split()
    np.save(os.path.join(out, "digits_test_x.npy"), x_te)
    np.save(os.path.join(out, "digits_test_y.npy"), y_te)
    np.save(os.path.join(out, "digits_calib.npy"), calib)

    w, g = train_mlp(x_tr, y_tr)
    save_model(os.path.join(out, "digits_mlp.npz"), w, g)
    h = x_te.reshape(len(x_te), -1)
    for i in (1, 2, 3):
        h = h @ w[f"fc{i}.weight"].T + w[f"fc{i}.bias"]
        h = np.maximum(h, 0) if i < 3 else h
    print(f"digits_mlp: test accuracy {np.mean(h.argmax(1) == y_te):.4f}")

    import torch
    w, g, net = train_cnn(x_tr, y_tr)
    save_model(os.path.join(out, "digits_cnn.npz"), w, g)
    with torch.no_grad():
        pred = net(torch.from_numpy(x_te)).argmax(1).numpy()
    print(f"digits_cnn: test accuracy {np.mean(pred == y_te):.4f}")


if __name__ == "__main__":
    main()
