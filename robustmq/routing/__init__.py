"""Shared by every front-end: subjects, the subscription trie, and the publish router."""
