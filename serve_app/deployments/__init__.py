"""Thin Ray Serve wrappers over the engines: batching, replicas, routing."""
