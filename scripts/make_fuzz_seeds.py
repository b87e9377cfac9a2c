"""Writes a few small valid safetensors files (F32, F16, BF16, several tensors) as fuzz seeds."""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
save_file({"model.embed_tokens.weight": rng.standard_normal((8, 4), dtype=np.float32),
           "model.norm.weight": np.ones(4, dtype=np.float32)}, str(out / "f32.safetensors"))
save_file({"a": rng.standard_normal((3, 5)).astype(np.float16)}, str(out / "f16.safetensors"),
          metadata={"format": "pt"})
hdr = json.dumps({"b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
(out / "bf16.safetensors").write_bytes(len(hdr).to_bytes(8, "little") + hdr + bytes(8))
