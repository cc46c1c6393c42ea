#!/usr/bin/env python
"""Create the superuser ``admin`` once, with a random password printed once."""

import os
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "migration_console.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402

User = get_user_model()
if User.objects.filter(username="admin").exists():
    print("Superuser 'admin' already exists (its password was printed when it was created).")
else:
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser("admin", "admin@localhost", password)
    print("=" * 60)
    print(" Superuser created: admin")
    print(f" Password (shown once): {password}")
    print(" Console: http://127.0.0.1:8000/admin/")
    print("=" * 60)
