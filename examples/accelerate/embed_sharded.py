"""Embed a large image-report archive across processes, one resumable Arrow folder per chunk, then index it.

Each process takes a contiguous shard of the dataset (`Dataset.shard`), embeds it chunk by chunk with
`cxr_mtclip.retrieval.embed_dataset` on its own device, and writes every chunk to
``<output>/shards/rank<R>-chunk<C>`` atomically, so memory stays bounded by one chunk and a restarted run
skips the chunks already written. The main process then concatenates the chunks in order and builds
and saves a FAISS index on the fused embeddings.

    # a trained model (model + processor saved in one folder) on a saved dataset, every GPU of a machine
    accelerate launch --config_file examples/accelerate/multi_gpu.yaml examples/accelerate/embed_sharded.py \
        --model runs/openi --dataset data/openi --split test --output embeddings/openi-test
    # a runnable demo: tiny random model, synthetic studies, two CPU processes
    accelerate launch --config_file examples/accelerate/cpu_2proc.yaml examples/accelerate/embed_sharded.py \
        --phantoms 96 --output /tmp/embed-demo --chunk-rows 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

KEEP_COLUMNS = ("uid", "label", "report", "image_embeds", "text_embeds", "fused_embeds", "embeds_model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="a DatasetDict or Dataset folder written with save_to_disk")
    source.add_argument("--phantoms", type=int, help="demo: N synthetic studies and a tiny random model")
    parser.add_argument("--model", help="folder with a saved CxrMtClipModel and CxrMtClipProcessor (not with --phantoms)")
    parser.add_argument("--split", default="test", help="split of a DatasetDict")
    parser.add_argument("--output", required=True, help="output folder: shards/, embeddings/ and the index")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="rows embedded and written at a time per process")
    parser.add_argument("--index", choices=["flat", "ivf", "hnsw"], default="flat")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.dataset and not args.model:
        parser.error("--dataset needs --model")
    return args


def load_inputs(args: argparse.Namespace, output: Path):
    """(model, processor, dataset): a saved model + dataset, or the tiny demo built from the seed."""
    import datasets
    import torch

    from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel, CxrMtClipProcessor, build_wordpiece_tokenizer

    if args.phantoms:
        from cxr_mtclip.data import make_phantom_openi

        config = CxrMtClipConfig.tiny()
        dataset = make_phantom_openi(args.phantoms, seed=args.seed, image_size=config.image_size)
        torch.manual_seed(args.seed)  # every process builds the same random model
        model = CxrMtClipModel(config)
        # every process trains the same tokenizer on the same reports, in its own folder
        tokenizer = build_wordpiece_tokenizer(dataset["report"], output / f".tokenizer-{_rank()}", vocab_size=500)
        return model, CxrMtClipProcessor.from_config(config, tokenizer), dataset
    loaded = datasets.load_from_disk(args.dataset)
    dataset = loaded[args.split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return CxrMtClipModel.from_pretrained(args.model), CxrMtClipProcessor.from_pretrained(args.model), dataset


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import datasets
    from accelerate import Accelerator

    from cxr_mtclip.atomic import atomic_directory
    from cxr_mtclip.retrieval import build_index, embed_dataset, save_faiss_index

    import torch

    # without a GPU, cpu=True makes the launched processes join one gloo group instead of each running alone
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    output = Path(args.output)
    shards = output / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    model, processor, dataset = load_inputs(args, output)
    rank, world = accelerator.process_index, accelerator.num_processes

    # contiguous shards keep the row order: concatenating rank 0, 1, ... gives the dataset back
    shard = dataset.shard(num_shards=world, index=rank, contiguous=True)
    for chunk, start in enumerate(range(0, len(shard), args.chunk_rows)):
        target = shards / f"rank{rank:05d}-chunk{chunk:05d}"
        if (target / "dataset_info.json").is_file():
            continue  # written by an earlier run
        part = shard.select(range(start, min(start + args.chunk_rows, len(shard))))
        embedded = embed_dataset(model, processor, part, batch_size=args.batch_size, device=accelerator.device,
                                 show_progress=accelerator.is_local_main_process)
        embedded = embedded.select_columns([c for c in KEEP_COLUMNS if c in embedded.column_names])
        with atomic_directory(target) as tmp:
            embedded.save_to_disk(str(tmp))
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        parts = sorted(shards.glob("rank*-chunk*"))  # rank-major, then chunk: the original order
        combined = datasets.concatenate_datasets([datasets.load_from_disk(str(p)) for p in parts])
        if len(combined) != len(dataset):
            raise RuntimeError(f"{shards}: {len(combined)} embedded rows, the dataset has {len(dataset)}")
        with atomic_directory(output / "embeddings") as tmp:
            combined.save_to_disk(str(tmp))
        combined = datasets.load_from_disk(str(output / "embeddings"))
        build_index(combined, "fused_embeds", args.index, show_progress=False)
        save_faiss_index(combined, "fused_embeds", output / "fused_embeds.faiss")
        print(f"embedded {len(combined)} studies on {world} process(es) into {output / 'embeddings'}; "
              f"{args.index} index at {output / 'fused_embeds.faiss'}")
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
