"""The broker component: everything ``bpfailover init`` writes for a deployment.

``bundle.write_bundle`` is the entry point; the other modules each render one kind
of file (certificates, mosquitto's password file, its configuration and ACL, and
the TOML configurations of the decider, the operator and each node).
"""
