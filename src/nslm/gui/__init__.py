"""`nslm gui`: a local Gradio app over the same Python API as the CLI.

`runs` reads run folders (models, metrics, status), `training` starts and stops `nslm train` as its own
process, `overlap` marks the n-grams a story shares with its closest training story, `reports` finds
evaluation reports, and `app` puts them on screen.
"""
