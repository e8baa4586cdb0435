"""
Add audit logging tables

# MIGRATION_SCOPE: both
# MIGRATION_VERSION: 005_add_audit_logs
# MIGRATION_DESCRIPTION: Create audit_logs table in all schemas
"""

UPGRADE_SQL = """
CREATE TABLE IF NOT EXISTS audit_logs (
    id SERIAL PRIMARY KEY,
    user_id INTEGER,
    action VARCHAR(100) NOT NULL,
    resource_type VARCHAR(100),
    resource_id INTEGER,
    metadata JSONB,
    ip_address VARCHAR(50),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_audit_logs_user ON audit_logs(user_id);
CREATE INDEX IF NOT EXISTS idx_audit_logs_action ON audit_logs(action);
CREATE INDEX IF NOT EXISTS idx_audit_logs_created ON audit_logs(created_at);
"""

DOWNGRADE_SQL = """
DROP TABLE IF EXISTS audit_logs;
"""


def upgrade():
    return UPGRADE_SQL


def downgrade():
    return DOWNGRADE_SQL
