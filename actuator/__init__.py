"""The actuator: runs on a block producer, applies the commanded role and fences itself.

Pure logic lives in ``policy`` (which commands to accept) and ``fence`` (when to demote
for lack of broker contact); ``state`` keeps the durable epoch; ``methods`` change the
node; ``controller`` ties them together without MQTT; ``service`` is the I/O shell.
"""
