"""Run folders: content-addressed stage folders, atomic writes, completion markers, the run lock."""
