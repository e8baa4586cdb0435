"""
Create the public tables: the tenant registry and system settings

# MIGRATION_SCOPE: public
# MIGRATION_VERSION: 001_create_public_tables
# MIGRATION_DESCRIPTION: Create the tenants registry and system tables
"""

UPGRADE_SQL = """
CREATE TABLE IF NOT EXISTS tenants (
    id SERIAL PRIMARY KEY,
    slug VARCHAR(56) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL,
    schema_name VARCHAR(63) NOT NULL UNIQUE,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS system_settings (
    key VARCHAR(100) PRIMARY KEY,
    value TEXT,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
"""

DOWNGRADE_SQL = """
DROP TABLE IF EXISTS system_settings;
DROP TABLE IF EXISTS tenants;
"""


def upgrade():
    """Apply migration"""
    return UPGRADE_SQL


def downgrade():
    """Revert migration"""
    return DOWNGRADE_SQL
