-- Up Migration

-- The tenant a reservation was created under (the API key's; 'default' for keys without one and while
-- authentication is off): a client key sees only its own tenant's reservations. Existing rows are 'default',
-- which is what every key saw before tenants existed. A constant default adds the column without a rewrite.
ALTER TABLE reservations ADD COLUMN tenant text NOT NULL DEFAULT 'default';
