"""check_safetensors_writer.py — read a file written by flatq's st_writer with the Python
`safetensors` library (the reference implementation of the format) and check every tensor
against the values the C side promises: element i of each tensor is f(i) below.

Usage (on a machine with safetensors + torch): python3 check_safetensors_writer.py FILE
Produce FILE with build/st_writer_sample (see tests/reference/st_writer_sample.c).
Prints one line per tensor and "OK" at the end, or raises.
"""
import sys

import torch
from safetensors import safe_open

EXPECT = {  # name -> (torch dtype, shape)
    "a.bf16": (torch.bfloat16, (3, 5)),
    "b.f16": (torch.float16, (7,)),
    "c.f32": (torch.float32, (2, 3, 4)),
    "d.f64": (torch.float64, ()),
    "e.u8": (torch.uint8, (11,)),
    "f.i64": (torch.int64, (2, 2)),
    "g.empty": (torch.float32, (0, 4)),
    "z \"quoted\" ünï": (torch.int32, (3,)),
}


def value(i, dtype):
    if dtype in (torch.uint8,):
        return (7 * i + 3) % 256
    if dtype in (torch.int64, torch.int32):
        return -1000 * i + 7
    return (i - 2) * 0.375  # exact in bf16, f16, f32, f64 for the sizes used


def main(path):
    with safe_open(path, framework="pt") as f:
        names = sorted(f.keys())
        assert names == sorted(EXPECT), (names, sorted(EXPECT))
        meta = f.metadata()
        assert meta == {"format": "pt", "writer": "flatq"}, meta
        for name in names:
            t = f.get_tensor(name)
            dtype, shape = EXPECT[name]
            assert t.dtype == dtype, (name, t.dtype)
            assert tuple(t.shape) == shape, (name, t.shape)
            flat = t.reshape(-1)
            for i in range(flat.numel()):
                want = value(i, dtype)
                assert flat[i].item() == want, (name, i, flat[i].item(), want)
            print(f"{name}: {t.dtype} {tuple(t.shape)} ok")
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
