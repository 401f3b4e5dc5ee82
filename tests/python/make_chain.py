"""Writes a content-signature PKI for the x5u tests, shaped like Autograph's: a P-384 root CA, an intermediate CA,
and an end-entity certificate for SIGNER_NAME with the codeSigning extended key usage; plus broken variants.

Usage: make_chain.py OUT_DIR SIGNER_NAME
Writes ee.key.pem (the end-entity's private key), good.pem, roots.pem (the root alone), no-root.pem (end-entity and
intermediate), root.sha256 (hex SHA-256 of the root's DER), and one chain per flaw: expired.pem, no-eku.pem,
wrong-name.pem, forged.pem (end-entity signed by a rogue key), issuer-name.pem (signed by the intermediate's key but
naming another issuer), inter-not-ca.pem, no-keycertsign.pem (intermediate's keyUsage without keyCertSign),
path-len.pem (root with pathLenConstraint 0 above an intermediate), critical-ext.pem (an unknown critical
extension on the end-entity), rogue.pem (a well-formed chain under an attacker's own root, for the same name and the
same end-entity key).
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
CA_USAGE = dict(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False)


def key():
    return ec.generate_private_key(ec.SECP384R1())


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert(subject, public_key, issuer, issuer_key, ca, days=(-1, 30), names=None, eku=ExtendedKeyUsageOID.CODE_SIGNING,
         path_length=None, usage=CA_USAGE, extra=None):
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=days[0]))
        .not_valid_after(NOW + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
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
    short_root = cert("Test Root CA", root_key.public_key(), "Test Root CA", root_key, ca=True, days=(-1, 3650),
                      path_length=0)
    not_ca = cert("Test Intermediate", inter_key.public_key(), "Test Root CA", root_key, ca=False, names=["x.example"])
    signs_only = cert("Test Intermediate", inter_key.public_key(), "Test Root CA", root_key, ca=True, days=(-1, 365),
                      usage={**CA_USAGE, "key_cert_sign": False, "digital_signature": True})
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    rogue_root_key, rogue_inter_key = key(), key()
    rogue_root = cert("Test Root CA", rogue_root_key.public_key(), "Test Root CA", rogue_root_key, ca=True,
                      days=(-1, 3650))
    rogue_inter = cert("Test Intermediate", rogue_inter_key.public_key(), "Test Root CA", rogue_root_key, ca=True)
    rogue_ee = cert(signer_name, ee_key.public_key(), "Test Intermediate", rogue_inter_key, ca=False,
                    names=[signer_name])
    files = {
        "good.pem": pem(ee(), inter, root),
        "roots.pem": pem(root),
        "no-root.pem": pem(ee(), inter),
        "expired.pem": pem(ee(days=(-60, -30)), inter, root),
        "no-eku.pem": pem(ee(eku=ExtendedKeyUsageOID.SERVER_AUTH), inter, root),
        "wrong-name.pem": pem(ee(names=["other.content-signature.example"]), inter, root),
        "forged.pem": pem(cert(signer_name, ee_key.public_key(), "Test Intermediate", rogue_key, ca=False,
                               names=[signer_name]), inter, root),
        "issuer-name.pem": pem(cert(signer_name, ee_key.public_key(), "Someone Else", inter_key, ca=False,
                                    names=[signer_name]), inter, root),
        "inter-not-ca.pem": pem(ee(), not_ca, root),
        "no-keycertsign.pem": pem(ee(), signs_only, root),
        "path-len.pem": pem(ee(), inter, short_root),
        "critical-ext.pem": pem(ee(extra=unknown), inter, root),
        "rogue.pem": pem(rogue_ee, rogue_inter, rogue_root),
        "ee.key.pem": ee_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()),
        "root.sha256": hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest().encode(),
    }
    for file, data in files.items():
        with open(os.path.join(out, file), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
