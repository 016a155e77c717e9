-- target: base.legal_entity
-- sources: business_registration, business_licence, social_insurance, tax_payment
-- Legal-entity base library (法人综合库): one row per unified social credit code from market
-- regulation's registry, with its business licence, its insured employees (social
-- insurance) and its tax payments (the tax bureau's resource is planned: empty until it
-- delivers).
DROP TABLE IF EXISTS base.legal_entity;

CREATE TABLE base.legal_entity AS
WITH licence AS (
    SELECT uscc, licence_no, valid_until,
           ROW_NUMBER() OVER (PARTITION BY uscc ORDER BY issue_date DESC, licence_no DESC) AS rn
    FROM ods.business_licence
),
employees AS (
    SELECT employer_uscc AS uscc, COUNT(DISTINCT resident_id) AS insured_employees
    FROM ods.social_insurance
    WHERE employer_uscc IS NOT NULL
    GROUP BY employer_uscc
),
tax AS (
    SELECT uscc, SUM(amount) AS tax_paid, MAX(paid_date) AS last_paid_date
    FROM ods.tax_payment
    GROUP BY uscc
)
SELECT
    b.uscc,
    b.name,
    b.legal_rep_name,
    b.legal_rep_id,
    b.division_code,
    b.address,
    b.entity_type,
    b.established_date,
    b.registered_capital,
    b.status,
    'FR-SC-0001' AS src_registration,
    l.licence_no,
    l.valid_until AS licence_valid_until,
    CASE WHEN l.uscc IS NULL THEN NULL ELSE 'FR-SC-0002' END AS src_licence,
    COALESCE(e.insured_employees, 0) AS insured_employees,
    CASE WHEN e.uscc IS NULL THEN NULL ELSE 'RK-RS-0001' END AS src_employees,
    t.tax_paid,
    t.last_paid_date,
    CASE WHEN t.uscc IS NULL THEN NULL ELSE 'FR-SW-0001' END AS src_tax
FROM ods.business_registration b
LEFT JOIN licence l ON l.uscc = b.uscc AND l.rn = 1
LEFT JOIN employees e ON e.uscc = b.uscc
LEFT JOIN tax t ON t.uscc = b.uscc;
