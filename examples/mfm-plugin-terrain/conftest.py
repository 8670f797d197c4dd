"""Make ``mfm_terrain`` importable when the tests run from a source checkout (not installed).

pytest puts this file's directory on ``sys.path`` (rootdir-relative ``prepend`` import
mode), so ``python -m pytest examples/mfm-plugin-terrain/tests`` works before
``pip install -e examples/mfm-plugin-terrain``.
"""
