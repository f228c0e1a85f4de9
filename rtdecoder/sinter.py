"""rtdecoder's decoders as sinter custom decoders.

    sinter collect --circuits *.stim --decoders rtdecoder_union_find rtdecoder_matching \\
        --custom_decoders_module_function rtdecoder.sinter:decoders ...

or, in Python, ``sinter.collect(..., decoders=["rtdecoder_union_find"], custom_decoders=decoders())``.

``decoders()`` holds ``rtdecoder_NAME`` for every registered decoder (``rtdecoder.decoders``,
plug-ins included), decoding whole shots (W = all). ``RtDecoder(decoder, window, commit)``
decodes in sliding windows of ``window`` rounds committing ``commit``, and with ``parallel=k``
in parallel windows on ``k`` workers; rounds come from the DEM's
detector time coordinates (stim's generated circuits have them). Shots go through the service's
own code path (``Engine.decode_shots``: framing, state machine, window decoding, commit/carry),
so sinter's logical error rates are those of the service.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sinter
import stim

from rtdecoder.config import WINDOW_ALL, StreamConfig


@dataclass(frozen=True)
class RtDecoder(sinter.Decoder):
    """A picklable sinter decoder description.

    Attributes:
        decoder: a registered decoder's name (``rtdecoder.decoders.names()``).
        window: W in rounds, 0 for whole shots.
        commit: C in rounds (ignored when ``window`` is 0).
    """

    decoder: str = "union_find"
    window: int = WINDOW_ALL
    commit: int = 0
    parallel: int = 0
    """0: sliding windows, through the service's own code path. ``k >= 1``: parallel windows
    (cores of ``commit`` rounds, buffers of ``window - commit``) on ``k`` workers
    (``rtdecoder.parallel.ParallelWindowDecoder``), any decoder."""

    def compile_decoder_for_dem(self, *, dem: stim.DetectorErrorModel) -> "CompiledRtDecoder":
        return CompiledRtDecoder(self, dem)

    def decode_via_files(self, *, num_shots, num_dets, num_obs, dem_path, dets_b8_in_path, obs_predictions_b8_out_path,
                         tmp_dir) -> None:
        dem = stim.DetectorErrorModel.from_file(dem_path)
        packed = stim.read_shot_data_file(path=str(dets_b8_in_path), format="b8", num_detectors=num_dets,
                                          bit_packed=True)
        preds = self.compile_decoder_for_dem(dem=dem).decode_shots_bit_packed(bit_packed_detection_event_data=packed)
        stim.write_shot_data_file(data=preds, path=str(obs_predictions_b8_out_path), format="b8", num_observables=num_obs)


class CompiledRtDecoder(sinter.CompiledDecoder):
    def __init__(self, desc: RtDecoder, dem: stim.DetectorErrorModel):
        from rtdecoder.engine import Engine, stream_for_dem

        self._parallel = None
        if desc.parallel:
            from rtdecoder.parallel import ParallelWindowDecoder

            self._parallel = ParallelWindowDecoder(dem, desc.decoder, desc.window, desc.commit, desc.parallel)
            self._layout = self._parallel.layout
            return
        cfg = StreamConfig(id=0, decoder=desc.decoder, window=desc.window,
                           commit=desc.commit if desc.window != WINDOW_ALL else None)
        self._engine = Engine([stream_for_dem(cfg, dem)])
        self._layout = self._engine.streams[0].layout

    def decode_shots_bit_packed(self, *, bit_packed_detection_event_data: np.ndarray) -> np.ndarray:
        """``(shots, ceil(num_detectors / 8))`` uint8 in, ``(shots, ceil(num_observables / 8))`` uint8
        out, both little-endian bit order (bit ``k`` of shot ``s`` at ``x[s, k // 8] >> (k % 8) & 1``)."""
        lay = self._layout
        events = np.unpackbits(bit_packed_detection_event_data, axis=1, bitorder="little", count=lay.num_detectors)
        if self._parallel is not None:
            return np.packbits(self._parallel.decode_shots(events), axis=1, bitorder="little")
        preds = self._engine.decode_shots(0, events, rounds_per_packet=lay.num_rounds)
        return np.packbits(preds, axis=1, bitorder="little")


def decoders() -> dict[str, sinter.Decoder]:
    """The custom decoders for ``--custom_decoders_module_function rtdecoder.sinter:decoders``:
    ``rtdecoder_NAME`` for each registered decoder."""
    from rtdecoder import decoders as registry

    return {f"rtdecoder_{name}": RtDecoder(name) for name in registry.names()}
