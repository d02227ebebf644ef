"""Known secret shapes are scrubbed; harmless look-alikes survive."""

from __future__ import annotations

import json

import pytest

from pyctl.redact import MASK, contains_secret, scrub, scrub_in_place, scrub_text, scrub_to_json

TOKEN = "abcdef.0123456789abcdef"
CERT_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"kubeadm join 10.0.0.1:6443 --token {TOKEN} --discovery-token-ca-cert-hash sha256:{CERT_KEY}", TOKEN),
        (f"--certificate-key {CERT_KEY}", CERT_KEY),
        (f"[upload-certs] Using certificate key:\n{CERT_KEY}\n", CERT_KEY),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAfake\n-----END RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEAfake",
        ),
        ("-----BEGIN CERTIFICATE-----\nMIIDBTCCAe2gfake\n-----END CERTIFICATE-----", "MIIDBTCCAe2gfake"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEfake (truncated", "b3BlbnNzaC1rZXktdjEfake"),
        (
            "client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=",
            "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=",
        ),
        ("client-certificate-data: QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="),
        ("proxy https://alice:s3cr3t-pass@proxy.example.invalid:3128", "s3cr3t-pass"),
        ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig", "eyJhbGciOiJSUzI1NiJ9.payload.sig"),
    ],
)
def test_secret_shapes_are_scrubbed(text, secret):
    cleaned = scrub_text(text)
    assert secret not in cleaned and MASK in cleaned
    assert contains_secret(text)
    # Inside an event, where a quick check over the whole structure's JSON text decides first whether
    # anything needs a walk: JSON escaping (newlines, tabs, quotes, backslashes) must not hide a shape.
    for sep in (" ", "\n", "\t", '"', "\\"):
        variant = text.replace(" ", sep)
        expected = scrub_text(variant)

        def event(line):
            return {"event_data": {"res": {"stdout_lines": ["x", line]}, line: 1}, "counter": 1}

        in_place = event(variant)
        scrub_in_place(in_place)
        assert scrub(event(variant)) == in_place == event(expected), sep
        cleaned, text = scrub_to_json(event(variant))
        assert cleaned == event(expected) and json.loads(text) == event(expected), sep
    assert secret not in repr(scrub(event(text)))


@pytest.mark.parametrize(
    "text",
    [
        f"image registry.k8s.io/pause@sha256:{CERT_KEY}",
        f"--discovery-token-ca-cert-hash sha256:{CERT_KEY}",
        "https://pkgs.k8s.io/core:/stable:/v1.36/deb/",
        "node cp1.lab.example.com is Ready",
        "version 1.36.2, commit 0123456789abcdef0123456789abcdef01234567",
    ],
)
def test_harmless_look_alikes_survive(text):
    assert scrub_text(text) == text
    assert not contains_secret(text)


def test_scrub_walks_nested_data():
    data = {"res": {"stdout_lines": [f"token {TOKEN}"], "cmd": ("kubeadm", TOKEN)}, "n": 3, TOKEN: True}
    cleaned = scrub(data)
    assert TOKEN not in repr(cleaned)
    assert cleaned["n"] == 3
