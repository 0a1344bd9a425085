"""The file behind `fit(checkpoint=..., resume=...)`: one NumPy .npz, no pickle.

Entries:
  meta                   JSON text: format and version, the run's settings, the position
                         (epochs done, the next batch of an epoch in progress), the step
                         count, the History, the optimizer's class, steps and
                         hyperparameters, the state of every random generator
  model:<name>           model.state_dict(): parameters, then buffers
  optimizer:<i>:<key>    optimizer.state_dict()["state"][i][key]
  best:<name>            the best epoch's state_dict (early stopping with restore_best)
  order                  the shuffled row order of the epoch in progress
  epoch:<key>            arrays of the epoch in progress (its predictions so far)

The file is written atomically (temporary file in the same folder, fsync, rename:
_files.atomic_write), so after a crash or `kill -9` the file on disk is the last whole
checkpoint. Reading checks the zip's CRCs (a flipped byte or a truncated file fails).
"""

from __future__ import annotations

import io
import json
import zlib

import numpy as np

from ._files import atomic_write

FORMAT = "tinygrad_mlp.fit checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: corrupt, or from another model, optimizer
    or run. The message names the file and what differs."""


# ----------------------------------------------------------------------------- the file


def write(path, meta, arrays):
    """Write `meta` (JSON-able) and `arrays` (name -> ndarray) to `path`, atomically."""
    entries = dict(arrays)
    entries["meta"] = np.array(json.dumps(dict(meta, format=FORMAT, version=VERSION)))
    buf = io.BytesIO()
    np.savez(buf, **entries)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def read(path):
    """(meta, arrays) of a checkpoint; CheckpointError naming the file if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}  # reads every entry: the CRCs are checked
    except FileNotFoundError:
        raise
    except Exception as e:  # BadZipFile, ValueError, OSError, EOFError, KeyError, ...
        raise CheckpointError(f"{path} is not a readable checkpoint of fit (corrupt or "
                              f"truncated: {type(e).__name__}: {e})") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of fit (no '{FORMAT}' entry)")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')}, this "
                              f"library reads version {VERSION}")
    return meta, arrays


def prefixed(arrays, prefix):
    """The entries of `arrays` under `prefix` ('model:'), with the prefix removed, in order."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def optimizer_arrays(state_dict):
    """optimizer.state_dict()'s per-parameter arrays as flat 'optimizer:<i>:<key>' entries."""
    return {f"optimizer:{i}:{k}": np.asarray(v)
            for i, s in enumerate(state_dict["state"]) for k, v in s.items()}


def optimizer_state(meta, arrays):
    """The optimizer state_dict stored by `optimizer_arrays` and meta['optimizer']."""
    info = meta["optimizer"]
    state = [{} for _ in range(int(info["n_params"]))]
    for key, value in prefixed(arrays, "optimizer:").items():
        i, name = key.split(":", 1)
        state[int(i)][name] = value
    return {"optimizer": info["class"], "steps": info["steps"],
            "hyperparameters": info["hyperparameters"], "state": state}


# ----------------------------------------------------------------------------- generators


def generators(model, loss_fn, shuffle_rng):
    """name -> every random generator the run draws from: 'shuffle' (fit's RandomState),
    and '<module>.<attribute>' for each np.random.RandomState or Generator attribute of a
    module of the model (e.g. a Dropout's '2.rng') or of the loss ('loss.<...>')."""
    found = {"shuffle": shuffle_rng}
    for owner, prefix in ((model, ""), (loss_fn, "loss.")):
        walk = getattr(owner, "named_modules", None)
        for mod_name, mod in (walk() if walk is not None else ()):
            for attr, value in vars(mod).items():
                if isinstance(value, (np.random.RandomState, np.random.Generator)):
                    found[prefix + (f"{mod_name}.{attr}" if mod_name else attr)] = value
    return found


def generator_layout(gens):
    """name -> (kind, index of the first name holding the same object): the same object
    under two names must be the same object again on resume."""
    first = {}
    return {name: [type(g).__name__, first.setdefault(id(g), name)] for name, g in gens.items()}


def generator_state(g):
    """The full state of a RandomState or Generator, JSON-able."""
    if isinstance(g, np.random.RandomState):
        name, keys, pos, has_gauss, cached = g.get_state()
        return {"name": name, "keys": [int(k) for k in keys], "pos": int(pos),
                "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return _to_json(g.bit_generator.state)


def set_generator_state(g, state):
    """Restore `state` into the generator object itself (jit and layers hold references to
    it, so it is never replaced)."""
    if isinstance(g, np.random.RandomState):
        g.set_state((state["name"], np.asarray(state["keys"], dtype=np.uint32), state["pos"],
                     state["has_gauss"], state["cached_gaussian"]))
    else:
        g.bit_generator.state = _from_json(state)


def _to_json(x):
    if isinstance(x, dict):
        return {k: _to_json(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": x.dtype.str}
    if isinstance(x, np.integer):
        return int(x)
    return x


def _from_json(x):
    if isinstance(x, dict):
        if "__ndarray__" in x:
            return np.array(x["__ndarray__"], dtype=x["dtype"])
        return {k: _from_json(v) for k, v in x.items()}
    return x


# ----------------------------------------------------------------------------- data


def fingerprint(*arrays):
    """A short check value of the data: shapes, dtypes, a CRC of up to 256 evenly spaced
    rows of each array (cheap for 60,000 images; enough to notice other data)."""
    parts = []
    for a in arrays:
        a = np.asarray(a)
        step = max(1, a.shape[0] // 256) if a.ndim else 1
        sample = np.ascontiguousarray(a[::step] if a.ndim else a)
        parts.append(f"{a.dtype.str}{list(a.shape)}:{zlib.crc32(sample.tobytes()):08x}")
    return " ".join(parts)
