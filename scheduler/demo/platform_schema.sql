-- The platform's tables as the daemon sees them: the columns it relies on, plus a few it must
-- ignore. Used by --demo and by the test suite only; the daemon never creates platform tables
-- in an operator's database.

CREATE TABLE IF NOT EXISTS clients (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid,
    first_name text,
    last_name text,
    email text,
    phone text,
    marketing_opt_in boolean DEFAULT false,
    created_at timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS performers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid,
    stage_name text,
    first_name text,
    last_name text,
    email text,
    phone text,
    bio text,
    created_at timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS bookings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_reference text UNIQUE,
    client_id uuid,
    performer_id uuid,
    event_type text,
    event_date timestamptz,
    duration_hours numeric,
    guest_count int,
    venue_address text,
    special_requirements text,
    total_amount numeric(12, 2),
    deposit_amount numeric(12, 2),
    status text NOT NULL DEFAULT 'pending',
    payment_status text NOT NULL DEFAULT 'pending',
    payment_method text,
    internal_notes text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS notifications (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid,
    booking_id uuid,
    type text,
    title text,
    message text,
    is_read boolean NOT NULL DEFAULT false,
    action_url text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS otp_codes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    phone text,
    code_hash text,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS audit_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_type text,
    action text,
    details jsonb,
    booking_id uuid,
    actor_id uuid,
    "timestamp" timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS notification_preferences (
    user_id uuid PRIMARY KEY,
    email_notifications boolean NOT NULL DEFAULT true,
    sms_notifications boolean NOT NULL DEFAULT true,
    payment_reminders boolean NOT NULL DEFAULT true,
    marketing boolean NOT NULL DEFAULT false
);
