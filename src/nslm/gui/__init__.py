"""`nslm gui`: a local Gradio app over the same Python API as the CLI.

`app` builds and serves the page from one module per tab (`models_tab`, `train_tab`, `story_tab`,
`eval_tab`, `sweeps_tab`), each a dataclass of its components whose handlers return values keyed by
component; `context` holds what the tabs share. Below them: `runs` reads run folders (models, metrics,
status), `training` starts and stops `nslm train` as its own process, `train_form` checks the Train form,
`storytelling` loads models and streams stories, `overlap` marks the n-grams a story shares with its
closest training story, and `reports` finds evaluation reports.
"""
