-- target: base.legal_entity
-- key: uscc
-- sources: business_registration(uscc), business_licence(uscc), social_insurance(employer_uscc), tax_payment(uscc), base.credit
-- Legal-entity base library (法人综合库): one row per unified social credit code from market
-- regulation's registry, merged with its latest business licence, its insured employees
-- (social insurance), its tax payments (the tax bureau's resource is planned: empty until it
-- delivers) and its credit records from the public credit library (base.credit, built first:
-- the credit office's licences, penalties and red / black lists in force, and the standing
-- they give). Every attribute group names the resource that supplied it and when
-- (<group>_src[_at]); credit_src is the credit platform's resource when it holds records of
-- the entity (else the standing rests on the registry alone, registration_src).
WITH licence AS (
    SELECT uscc, licence_no, valid_until, _valid_from,
           ROW_NUMBER() OVER (PARTITION BY uscc ORDER BY issue_date DESC, licence_no DESC) AS rn
    FROM {{ source('business_licence') }}
),
employees AS (
    SELECT employer_uscc AS uscc, COUNT(DISTINCT resident_id) AS insured_employees, MAX(_valid_from) AS _valid_from
    FROM {{ source('social_insurance') }}
    WHERE employer_uscc IS NOT NULL
    GROUP BY employer_uscc
),
tax AS (
    SELECT uscc, SUM(amount) AS tax_paid, MAX(paid_date) AS last_paid_date, MAX(_valid_from) AS _valid_from
    FROM {{ source('tax_payment') }}
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
    {{ src('b', 'business_registration', 'registration', present='b.uscc') }},
    l.licence_no,
    l.valid_until AS licence_valid_until,
    {{ src('l', 'business_licence', 'licence', present='l.uscc') }},
    COALESCE(e.insured_employees, 0) AS insured_employees,
    {{ src('e', 'social_insurance', 'employees', present='e.uscc') }},
    t.tax_paid,
    t.last_paid_date,
    {{ src('t', 'tax_payment', 'tax', present='t.uscc') }},
    c.credit_level,
    c.negative_records,
    c.licences_in_force,
    c.penalties_in_force,
    c.red_list,
    c.black_list,
    c.last_decision_date AS last_credit_decision_date,
    c.credit_records_src AS credit_src,
    c.credit_records_src_at AS credit_src_at
FROM {{ source('business_registration') }} b
LEFT JOIN licence l ON l.uscc = b.uscc AND l.rn = 1
LEFT JOIN employees e ON e.uscc = b.uscc
LEFT JOIN tax t ON t.uscc = b.uscc
LEFT JOIN {{ source('base.credit') }} c ON c.subject_id = b.uscc AND c.subject_kind = 'legal_entity'
