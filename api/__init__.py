"""The HTTP adapter, and nothing else.

Parses requests, calls one service or selector of the domain apps, presents the result, and maps
domain errors to RFC 9457 problem documents. It imports every app; no app imports it.
"""
