"""Prompting models over a prompt set (resumable), and mixing sources into training sets."""
