"""SUPERB on s3prl upstreams: the tasks, their recipes and data, the resumable runner and the leaderboard.

Submodules: ``tasks`` (one module per task; everything known of it), ``recipe_files`` (official recipes,
profiles, overrides), ``datafiles`` (the data files s3prl's pip package lacks: char.dict, the VoxCeleb1 split,
IEMOCAP meta data, LibriSpeech ``len_for_bucket``), ``tts`` (espeak-ng wrapper), ``corpus`` (the mini-SUPERB
corpus builder), ``planning`` / ``runs`` / ``launch`` / ``runner`` (the benchmark runner), ``cluster`` (its runs as
submitit / SLURM jobs), ``results`` (reading a run's metric), ``leaderboard``, ``uncertainty`` (its intervals and
SUPERB score), ``intervals``, ``score``, ``display`` (number formats, tables, the Pareto plot) and ``cost``.
Nothing is imported here, so importing this package stays cheap.
"""
