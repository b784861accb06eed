"""srscale's local copies of lm-eval tasks: the built-in definitions, read from files under a data folder.

Each YAML here mirrors an lm-eval 0.4.13 built-in task (same prompt, choices, target, metrics, filters and
generation settings); only where the documents come from differs. The documents are read by the loaders in
:mod:`srscale.evaluation.lm_eval_tasks.utils` from the folder passed as lm-eval task metadata ``data_dir``.
Usable from the lm-eval CLI too::

    lm_eval --model hf --model_args pretrained=DIR --include_path <this folder> \\
        --metadata '{"data_dir": "/path/to/data"}' --tasks srscale_arc_easy
"""
