"""Entitlements: what a customer may use because they paid (license keys, files, hooks).

- `catalog`: the TOML catalog of what each product grants;
- `models`: grants, their metadata, revocations, audit, licence activations, the hook outbox;
- `tokens`: signed, expiring download tokens;
- `hooks`: the `@on_entitlement` registry of Python hooks.
"""
