"""The method end to end on synthetic faces: ``fabnet demo`` (one seed, minutes) and
``fabnet study`` (every ablation and baseline over several seeds, about an hour).

config        DemoConfig: the demo's methods and sizes; the probe set's split and seed
runs          synthetic data, probe set, FAb-Net stages and baselines, reused when already on disk
pipeline      run_demo: data -> FAb-Net 1 and 3 sources -> baselines -> probes -> report
figures       loss curves and probe bar charts
report        the demo's report.md, sentences that follow the numbers and their intervals
study         run_study: the equal-step ablation and the baselines over training seeds
study_report  seed means with identity-bootstrap intervals, the paper's claims checked
cli           ``fabnet demo`` / ``fabnet study``
"""

from fabnet._lazy import lazy_exports

_EXPORTS = {
    "DemoConfig": "fabnet.demo.config",
    "DemoInterrupted": "fabnet.demo.runs",
    "StudyConfig": "fabnet.demo.study",
    "run_demo": "fabnet.demo.pipeline",
    "run_study": "fabnet.demo.study",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
