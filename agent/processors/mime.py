"""Content sniffing for detect_mime_type, after the WHATWG MIME sniffing rules (a subset)."""

from __future__ import annotations

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\x1f\x8b\x08", "application/x-gzip"),
    (b"PK\x03\x04", "application/zip"),
    (b"BM", "image/bmp"),
    (b"%!PS-Adobe-", "application/postscript"),
    (b"OggS\x00", "application/ogg"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"),
)
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<script", b"<iframe", b"<h1", b"<div", b"<font",
                b"<table", b"<a", b"<style", b"<title", b"<b", b"<body", b"<br", b"<p", b"<!--")


def detect_mime_type(text: str) -> str | None:
    data = text.encode("utf-8", "surrogateescape")[:512]
    stripped = data.lstrip(b"\t\n\x0c\r ")
    lower = stripped.lower()
    for start in _HTML_STARTS:
        if lower.startswith(start) and len(lower) > len(start) and lower[len(start)] in b" >":
            return "text/html; charset=utf-8"
    if lower.startswith(b"<?xml"):
        return "text/xml; charset=utf-8"
    if stripped[:1] in (b"{", b"["):
        return "application/json"
    for magic, mime in _SIGNATURES:
        if data.startswith(magic):
            return mime
    if any(b < 0x09 or (0x0D < b < 0x20 and b != 0x1B) for b in data):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"
