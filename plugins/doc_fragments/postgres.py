# Connection options of the cosmic.backup database modules.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host of the PostgreSQL server, or the directory of its Unix socket.
      - Defaults to libpq's default (C(PGHOST), then the local socket).
    type: str
    aliases: [host]
  port:
    description: Port of the server (libpq's default C(5432) when unset).
    type: int
    aliases: [login_port]
  login_user:
    description: Role to log in as. Backups of the globals need a superuser; a login
      that cannot read C(pg_authid) (managed services such as Neon) gets the roles
      without their passwords, with a warning.
    type: str
    aliases: [user]
  login_password:
    description: Password of O(login_user). Passed to the tools in C(PGPASSWORD), never
      on a command line.
    type: str
  database:
    description: The database to back up, or the database to restore into.
    type: str
    aliases: [db]
  connection_string:
    description:
      - A libpq connection string, C(key=value ...) or C(postgresql://user:password@host/db?sslmode=require)
        (Neon and other remote or serverless PostgreSQL). Options given separately
        override its parts. Its password is moved to C(PGPASSWORD).
    type: str
    aliases: [dsn]
  sslmode:
    description: libpq's C(sslmode); use C(require) or stricter for servers reached over a network.
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
"""
