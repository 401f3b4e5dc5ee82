"""Reads the deploy files and prints, as JSON, what the tests check against the real binaries: every command
line that runs signer-api or signer-worker, every SIGNER_* variable they are given, and the Kubernetes objects.

Usage: deploy_commands.py DEPLOY_DIR
"""

import configparser
import json
import pathlib
import sys

import yaml


def signer_argv(argv):
    return bool(argv) and argv[0].rsplit("/", 1)[-1] in ("signer-api", "signer-worker")


def main(deploy):
    deploy = pathlib.Path(deploy)
    commands, variables = [], {"compose": set(), "kubernetes": set()}

    compose = yaml.safe_load((deploy / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        argv = service.get("command")
        if isinstance(argv, list) and argv[:2] == ["sh", "-c"]:
            # A shell line: each command in it that runs a signer binary.
            for part in argv[2].replace("||", ";").replace("&&", ";").split(";"):
                if signer_argv(part.split()):
                    commands.append({"where": f"compose:{name}", "argv": part.split()})
        elif isinstance(argv, list) and signer_argv(argv):
            commands.append({"where": f"compose:{name}", "argv": argv})
        check = (service.get("healthcheck") or {}).get("test")
        if isinstance(check, list) and check[:1] == ["CMD"] and signer_argv(check[1:]):
            commands.append({"where": f"compose:{name}:healthcheck", "argv": check[1:]})
        variables["compose"].update(k for k in (service.get("environment") or {}) if k.startswith("SIGNER_"))

    objects = []
    for path in sorted((deploy / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            objects.append({"file": path.name, "kind": doc["kind"], "name": doc["metadata"]["name"], "doc": doc})
            if doc["kind"] == "Secret":
                variables["kubernetes"].update(k for k in doc.get("stringData", {}) if k.startswith("SIGNER_"))
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                if signer_argv(container.get("command")):
                    commands.append({"where": f"kubernetes:{path.name}:{container['name']}", "argv": container["command"]})
                variables["kubernetes"].update(e["name"] for e in container.get("env", []) if e["name"].startswith("SIGNER_"))

    for path in sorted((deploy / "systemd").glob("*.service")):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read_string(path.read_text())
        for key in ("ExecStartPre", "ExecStart"):
            if key in unit["Service"]:
                commands.append({"where": f"systemd:{path.name}:{key}", "argv": unit["Service"][key].split()})

    config_map = next(o["doc"] for o in objects if o["kind"] == "ConfigMap")
    print(json.dumps({
        "commands": commands,
        "variables": {k: sorted(v) for k, v in variables.items()},
        "objects": [{k: v for k, v in o.items() if k != "doc"} | {"spec": o["doc"].get("spec")} for o in objects],
        "kubernetes_config": config_map["data"]["signer.toml"],
    }))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
