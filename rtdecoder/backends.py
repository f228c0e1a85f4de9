"""The names of the backends union-find windows can be decoded on (``--backend``, ``backend`` in
``[server]``): below the configuration that validates them and ``rtdecoder.gpu`` that chooses."""

BACKENDS = ("cpu", "gpu", "auto")
"""``cpu``; ``gpu`` (the persistent GPU decoder, an error without a usable GPU); ``auto`` (the GPU
where a usable one is, else the CPU, saying why)."""
