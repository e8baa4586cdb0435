"""
Add avatar URL to users

# MIGRATION_SCOPE: tenant
# MIGRATION_VERSION: 003_add_user_avatar
# MIGRATION_DESCRIPTION: Add avatar_url column to users table
"""

# archify: allow index-not-concurrent because it is the guide's example, kept as it is
UPGRADE_SQL = """
ALTER TABLE users
ADD COLUMN IF NOT EXISTS avatar_url VARCHAR(500),
ADD COLUMN IF NOT EXISTS bio TEXT;

CREATE INDEX IF NOT EXISTS idx_users_avatar ON users(avatar_url);
"""

DOWNGRADE_SQL = """
ALTER TABLE users
DROP COLUMN IF EXISTS avatar_url,
DROP COLUMN IF EXISTS bio;
"""


def upgrade():
    return UPGRADE_SQL


def downgrade():
    return DOWNGRADE_SQL
