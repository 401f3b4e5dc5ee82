"""Writes a content-signature PKI for the x5u tests, shaped like Autograph's: a P-384 root CA, an intermediate CA,
and an end-entity certificate for SIGNER_NAME with the codeSigning extended key usage; plus broken variants.

Usage: make_chain.py OUT_DIR SIGNER_NAME
Writes ee.key.pem (the end-entity's private key), good.pem, expired.pem, no-eku.pem, wrong-name.pem, forged.pem
(end-entity signed by a rogue key) and root.sha256 (hex SHA-256 of the root's DER).
"""

import datetime
import hashlib
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def key():
    return ec.generate_private_key(ec.SECP384R1())


def cert(subject, public_key, issuer, issuer_key, ca, days=(-1, 30), names=None, eku=ExtendedKeyUsageOID.CODE_SIGNING):
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=days[0]))
        .not_valid_after(NOW + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


def pem(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def main(out, signer_name):
    os.makedirs(out, exist_ok=True)
    root_key, inter_key, ee_key, rogue_key = key(), key(), key(), key()
    root = cert("Test Root CA", root_key.public_key(), "Test Root CA", root_key, ca=True, days=(-1, 3650))
    inter = cert("Test Intermediate", inter_key.public_key(), "Test Root CA", root_key, ca=True, days=(-1, 365))
    ee = lambda **kw: cert(signer_name, ee_key.public_key(), "Test Intermediate", inter_key, ca=False,
                           **{"names": [signer_name], **kw})
    files = {
        "good.pem": pem(ee(), inter, root),
        "expired.pem": pem(ee(days=(-60, -30)), inter, root),
        "no-eku.pem": pem(ee(eku=ExtendedKeyUsageOID.SERVER_AUTH), inter, root),
        "wrong-name.pem": pem(ee(names=["other.content-signature.example"]), inter, root),
        "forged.pem": pem(cert(signer_name, ee_key.public_key(), "Test Intermediate", rogue_key, ca=False,
                               names=[signer_name]), inter, root),
        "ee.key.pem": ee_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()),
        "root.sha256": hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest().encode(),
    }
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
