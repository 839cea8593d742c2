"""`nslm export`: a trained Transformer as a Hugging Face transformers folder or a GGUF file."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  nslm export runs/tf1m exports/tf1m-hf --format hf      # LlamaForCausalLM (or GPT2LMHeadModel) folder
  nslm export runs/tf1m exports/tf1m.gguf --format gguf  # llama.cpp's format, tokenizer included
  nslm generate --model hf:exports/tf1m-hf "Once upon a time"   # and back: hf:DIR, llama2c:FILE.bin
"""


def register(subparsers) -> None:
    from nslm.cli import HelpFormatter

    p = subparsers.add_parser("export", help="export a Transformer run to Hugging Face transformers or GGUF",
                              description="Write a run (or shipped model) as a transformers folder that "
                              "AutoModelForCausalLM and AutoTokenizer load without custom code (Llama layout "
                              "for rotary runs, GPT-2 layout for learned positions), or as one GGUF file "
                              "(Llama layout). Needs the optional extra: pip install 'nslm[hf]'.",
                              epilog=EXAMPLE, formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder (runs/NAME) or the name of a shipped model")
    p.add_argument("out", help="folder to write (hf) or .gguf file (gguf)")
    p.add_argument("--format", choices=["hf", "gguf"], default="hf", help="what to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslm.interop.export import export

    out = export(args.run, args.out, args.format, args.overwrite)
    print(f"wrote {out}")
    return 0
