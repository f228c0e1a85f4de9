"""Shots for a controller to send: sampled from a stream's circuit with stim, or, for a stream
given as matrices (a CUDA-Q YAML decoder, ``rtdecoder.cudaq_config.MatrixModel``), from its
detector error model, with raw measurements that its ``D`` matrix turns into those detection
events.

``ShotSource(cfg, seed).sample(n)`` gives ``(sent, detection events, observable flips)``: what
``rtdecoder emulate`` sends (detection events, or measurements when ``measurements`` is set),
what the reference decoder decodes, and the truth.
"""

from __future__ import annotations

import numpy as np

from rtdecoder.config import ConfigError, StreamConfig
from rtdecoder.dem import circuit_dem, detector_layout, make_circuit, measurement_layout, measurement_layout_from_rows


def gf2_right_inverse(rows, num_columns: int) -> np.ndarray:
    """A right inverse ``R`` over GF(2) of the ``len(rows) × num_columns`` matrix ``D`` whose row
    ``i`` has ones at ``rows[i]``: uint8 ``(num_columns, len(rows))`` with ``D R = I`` (mod 2),
    found by Gauss-Jordan elimination on bit-packed rows.

    Raises:
        ConfigError: ``D``'s rows are not linearly independent (two detectors that are the same
            parity of measurements, or one the sum of others): no measurements give every
            pattern of detection events.
    """
    m = len(rows)
    width = num_columns + m
    words = (width + 63) // 64
    a = np.zeros((m, words * 64), np.uint8)
    for i, r in enumerate(rows):
        for j in r:
            a[i, j] ^= 1
        a[i, num_columns + i] = 1
    packed = np.packbits(a, axis=1, bitorder="little").view(np.uint64).copy()
    pivots = []
    row = 0
    for col in range(num_columns):
        if row == m:
            break
        w, b = col >> 6, np.uint64(1) << np.uint64(col & 63)
        hits = np.nonzero(packed[row:, w] & b)[0]
        if len(hits) == 0:
            continue
        p = row + int(hits[0])
        if p != row:
            packed[[row, p]] = packed[[p, row]]
        others = np.nonzero(packed[:, w] & b)[0]
        others = others[others != row]
        packed[others] ^= packed[row]
        pivots.append(col)
        row += 1
    if row < m:
        raise ConfigError(f"the model's D matrix has {m} rows but rank {row}: its detectors are not independent "
                          "parities of measurements, so no measurements give every pattern of detection events")
    bits = np.unpackbits(packed.view(np.uint8), axis=1, bitorder="little")[:, :width]
    # Row k now reads: measurement pivots[k] (+ free measurements) = the sum of detectors in its
    # right half. Free measurements set to 0: measurement pivots[k] = that sum.
    r = np.zeros((num_columns, m), np.uint8)
    for k, col in enumerate(pivots):
        r[col] = bits[k, num_columns:]
    return r


def stream_layout(cfg: StreamConfig):
    """The detector layout of stream ``cfg`` (its circuit's, or its matrix model's DEM's)."""
    return detector_layout(make_circuit(cfg) if cfg.model is None else cfg.model.dem)


class ShotSource:
    """Shots of stream ``cfg`` (seeded): its circuit's (stim's samplers and measurement-to-
    detection converter), or its matrix model's (the DEM's sampler; measurements ``R · events``
    with ``R`` a right inverse of ``D``, so that ``D`` gives back exactly the sampled events).

    Attributes:
        layout: the detector layout; dem: the detector error model (the reference decodes it);
        mlayout: the measurement layout when ``measurements`` is set, else None.
    """

    def __init__(self, cfg: StreamConfig, seed: int, measurements: bool):
        self.model = cfg.model
        self.measurements = measurements
        if self.model is None:
            self.circuit = make_circuit(cfg)
            self.dem = circuit_dem(self.circuit)
            self.layout = detector_layout(self.circuit)
            self.mlayout = measurement_layout(self.circuit, self.layout) if measurements else None
            if measurements:
                self._sampler = self.circuit.compile_sampler(seed=seed)
                self._m2d = self.circuit.compile_m2d_converter()
            else:
                self._sampler = self.circuit.compile_detector_sampler(seed=seed)
        else:
            self.circuit = None
            self.dem = self.model.dem
            self.layout = detector_layout(self.dem)
            self._sampler = self.dem.compile_sampler(seed=seed)
            self.mlayout = None
            if measurements:
                self.mlayout = measurement_layout_from_rows(self.model.d_rows, self.model.num_measurements, self.layout)
                self._r = gf2_right_inverse(self.model.d_rows, self.model.num_measurements).astype(np.float32)

    @property
    def blocks(self) -> np.ndarray:
        """Where each round's sent bits begin (measurements or detectors), int64 ``(rounds + 1,)``."""
        return self.mlayout.meas_offsets if self.mlayout is not None else self.layout.round_offsets

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` shots: ``(sent, events, flips)``: uint8 ``(n, bits per shot)`` as the controller
        sends them, uint8 ``(n, num_detectors)``, bool ``(n, num_observables)``."""
        if self.model is None:
            if self.measurements:
                meas = self._sampler.sample(n)
                dets, obs = self._m2d.convert(measurements=meas, separate_observables=True)
                return meas.astype(np.uint8), dets.astype(np.uint8), obs
            dets, obs = self._sampler.sample(n, separate_observables=True)
            return dets.astype(np.uint8), dets.astype(np.uint8), obs
        dets, obs, _ = self._sampler.sample(n)
        dets = dets.astype(np.uint8)
        if not self.measurements:
            return dets, dets, obs
        meas = (np.rint(dets.astype(np.float32) @ self._r.T).astype(np.int64) & 1).astype(np.uint8)
        return meas, dets, obs
