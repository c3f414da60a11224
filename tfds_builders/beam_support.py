"""Apache Beam generation for the builders: Beam is used only when the build is given Beam options
(``tfds build ... --beam_pipeline_options=...`` or ``DownloadConfig(beam_options=...)``); without
them the builders generate in-process as before, and apache-beam need not be installed."""


class DetectsBeam:
    """Builder mixin: ``self.use_beam`` tells ``_generate_examples`` whether to return a ``beam.PTransform``.

    TFDS passes the Beam options to its split builder only, so they are read here from the
    ``DownloadConfig`` on their way (``_generate_splits``, TFDS 4.9's internal hook)."""

    use_beam = False

    def _generate_splits(self, dl_manager, download_config):
        self.use_beam = bool(download_config.beam_options or download_config.beam_runner)
        return super()._generate_splits(dl_manager, download_config)


def dofn_base():
    """``apache_beam.DoFn`` when Beam is installed, else ``object`` (the DoFns are then never used)."""
    try:
        import apache_beam as beam
    except ImportError:
        return object
    return beam.DoFn
