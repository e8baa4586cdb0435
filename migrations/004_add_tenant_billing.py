"""
Add billing information to tenants

# MIGRATION_SCOPE: public
# MIGRATION_VERSION: 004_add_tenant_billing
# MIGRATION_DESCRIPTION: Add billing fields to tenants table
"""

UPGRADE_SQL = """
ALTER TABLE tenants
ADD COLUMN IF NOT EXISTS billing_email VARCHAR(255),
ADD COLUMN IF NOT EXISTS subscription_tier VARCHAR(50) DEFAULT 'free',
ADD COLUMN IF NOT EXISTS subscription_ends_at TIMESTAMP;
"""

DOWNGRADE_SQL = """
ALTER TABLE tenants
DROP COLUMN IF EXISTS billing_email,
DROP COLUMN IF EXISTS subscription_tier,
DROP COLUMN IF EXISTS subscription_ends_at;
"""


def upgrade():
    return UPGRADE_SQL


def downgrade():
    return DOWNGRADE_SQL
